"""Odd rows and hostile calls against everything but the admin (tests/test_admin_hostile.py).

Rows written by SQL (within the tables' CHECKs, or by a replica session that skips
the foreign keys' triggers) go through a real worker, the scheduler, maintenance,
the HTTP API and ``manage.py pgjobs``: none of them fails, the other jobs keep
flowing, and the odd one ends in a clear state with a clear error. Hostile calls on
the Python API raise the documented error, write nothing and leave the caller's
transaction usable.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from django_pgjobs import maintenance, queues
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.exceptions import (
    InvalidOption,
    InvalidQueueName,
    UnknownConnector,
    UnknownTask,
)
from django_pgjobs.models import Job, JobDependency, Queue
from django_pgjobs.pipelines import enqueue_pipeline
from tests.factories import QueueFactory
from tests.test_hardening_rows import sql

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"
GATHER = "tests.tasks_for_tests.takes_anything"


@pytest.fixture
def checked_at_once() -> Iterator[None]:
    """Foreign keys checked at each statement's end, as at the commit that a test's
    transaction never reaches (the job tables' keys are deferred)."""
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    yield
    sql("SET CONSTRAINTS ALL DEFERRED")


def states() -> dict[int, str]:
    return dict(Job.objects.values_list("pk", "state"))


def age(*ids: int, days: int = 30) -> None:
    sql(
        "UPDATE pgjobs_job SET finished_at = now() - make_interval(days => %s) WHERE id = ANY(%s)",
        [days, list(ids)],
    )


# -- prune and dependency edges --------------------------------------------------------------


def test_prune_deletes_a_finished_pipeline_with_its_edges(worker, checked_at_once):
    """Every finished pipeline made prune fail: the edges kept naming the deleted
    jobs, and their foreign key refused the batch (so nothing old was ever pruned
    again, the batch holding such a job failing every time)."""
    first = Job.enqueue(ADD, [1, 2])
    then = Job.enqueue(ADD, [3, 4], depends_on=[first])
    plain = Job.enqueue(ADD, [5, 6])
    assert worker.drain() == {"completed": 3}
    age(first.pk, then.pk, plain.pk)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 3
    assert not Job.objects.exists() and not JobDependency.objects.exists()


def test_prune_keeps_a_dependency_until_its_dependents_have_finished(worker, checked_at_once):
    """A gather job reads its dependencies' results when it runs: one finished long
    ago stays while the gather job waits for another."""
    early = Job.enqueue(ADD, [1, 2])
    late = Job.enqueue(ADD, [3, 4], run_at=timezone.now() + timedelta(days=1))
    gather = Job.enqueue(GATHER, depends_on=[early, late], pass_results=True)
    worker.drain()
    age(early.pk)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 0
    assert worker.drain(now=timezone.now() + timedelta(days=1, seconds=1)) == {"completed": 2}
    gather.refresh_from_db()
    assert gather.state == "completed" and gather.result == 1  # its one argument: results
    assert Job.objects.get(pk=gather.pk).meta["pass_results"] is True
    age(early.pk, late.pk, gather.pk)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 3
    assert not JobDependency.objects.exists()


# -- hostile calls on the Python API ---------------------------------------------------------


def first_job() -> Job:
    return Job.objects.order_by("pk").first() or Job.enqueue(ADD, [1, 2])


#: Calls that must raise ``InvalidOption`` with this message, writing nothing.
REFUSED_CALLS: dict[str, tuple[Callable[[], Any], str]] = {
    # A meta of the caller's set the keys its options write, bypassing their checks:
    # {"debounce": 5} was a TypeError; {"debounce": {"key": ...}} made it a debounced
    # job; {"on_dependency_failure": 5} ran it after a failed dependency.
    "meta setting debounce": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"debounce": 5}),
        "meta key 'debounce' is set by debounce_key= and debounce= instead",
    ),
    "meta setting a debounce key": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"debounce": {"key": "k", "seconds": 5}}),
        "meta key 'debounce'",
    ),
    "meta setting on_dependency_failure": (
        lambda: Job.enqueue(ADD, [1, 2], depends_on=[first_job()],
                            meta={"on_dependency_failure": 5}),
        "meta key 'on_dependency_failure' is set by on_dependency_failure= instead",
    ),
    "meta setting pass_results": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"pass_results": "yes"}),
        "meta key 'pass_results' is set by pass_results= instead",
    ),
    "meta setting concurrency_key": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"concurrency_key": ["x"] * 1000}),
        "meta key 'concurrency_key' is set by concurrency_key= instead",
    ),
    "enqueue_many, a meta setting them all": (
        lambda: Job.enqueue_many(
            [{"task": ADD}, {"task": ADD, "meta": {"pass_results": 1, "debounce": 1}}]
        ),
        "meta key 'debounce'",
    ),
    "a pipeline stage": (
        lambda: enqueue_pipeline([JobSpec(task=ADD, meta={"on_dependency_failure": "run"})]),
        "meta key 'on_dependency_failure'",
    ),
    # A NaN never ran out: job.wait() waited forever. A string failed in the arithmetic.
    **{
        f"wait(timeout={shown})": (
            lambda value=value: first_job().wait(timeout=value),
            "timeout must be a number of seconds",
        )
        for value, shown in [(math.nan, "nan"), (math.inf, "inf"), (-1, "-1"), ("1", "'1'"),
                             (True, "True"), (10**400, "10**400")]
    },
    "async_wait(timeout=nan)": (
        lambda: asyncio.run(first_job().async_wait(timeout=math.nan)),
        "timeout must be a number of seconds",
    ),
}  # fmt: skip


HUGE = 10**5000  # repr() raises ValueError: "Exceeds the limit (4300 digits)"

#: Calls that must raise another documented error, with this message, writing nothing.
OTHER_REFUSALS: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    # The message's repr() of the name raised ValueError instead of the error.
    "queue=10**5000": (lambda: Job.enqueue(ADD, [1, 2], queue=HUGE), InvalidQueueName,
                       "invalid queue name <a int too large to show>"),
    "connector=10**5000": (lambda: Job.enqueue(ADD, [1, 2], connector=HUGE), UnknownConnector,
                           "unknown connector <a int too large to show>"),
    "task 10**5000": (lambda: Job.enqueue(HUGE), UnknownTask,
                      "unknown task <a int too large to show>"),
    "a queue of a megabyte": (lambda: Job.enqueue(ADD, queue="q" * 10**6), InvalidQueueName,
                              r"invalid queue name 'q{290,300}\.\.\.: use"),
    # A NUL reached the database (DataError: the caller's transaction aborted); a
    # string was read as a list of one-letter queues, and nothing was paused.
    "set_paused of a NUL": (lambda: queues.set_paused(["a\x00"], True), InvalidQueueName,
                            r"invalid queue name 'a\\x00'"),
    "set_paused of a string": (lambda: queues.set_paused("default", True), TypeError,
                               "set_paused takes a list of queue names, not the string"),
    "set_paused of 10**5000": (lambda: queues.set_paused([HUGE], True), InvalidQueueName,
                               "invalid queue name <a int"),
    "set_paused('yes')": (lambda: queues.set_paused(["default"], "yes"), InvalidOption,
                          "paused must be True or False"),
}  # fmt: skip

ALL_REFUSED = {
    **{name: (act, InvalidOption, re.escape(text)) for name, (act, text) in REFUSED_CALLS.items()},
    **OTHER_REFUSALS,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("call", ALL_REFUSED)
def test_a_hostile_call_raises_the_documented_error_writes_nothing_and_keeps_the_transaction(
    call,
):
    first = first_job()
    QueueFactory(name="default")
    before = list(Queue.objects.values_list("name", "paused"))
    act, error, message = ALL_REFUSED[call]
    with transaction.atomic():
        with pytest.raises(error, match=message):
            act()
        assert list(Job.objects.values_list("pk", flat=True)) == [first.pk]  # still usable
        assert list(Queue.objects.values_list("name", "paused")) == before


def test_a_wait_of_zero_seconds_still_times_out_at_once():
    with pytest.raises(TimeoutError, match="did not finish within 0s"):
        first_job().wait(timeout=0)
