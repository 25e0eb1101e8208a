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

from django_pgjobs import housekeeping, maintenance, queues
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.exceptions import (
    InvalidOption,
    InvalidQueueName,
    UnknownConnector,
    UnknownTask,
)
from django_pgjobs.models import Job, JobDependency, Queue
from django_pgjobs.pipelines import enqueue_pipeline
from testproject.demo.tasks import split, total
from tests.factories import QueueFactory
from tests.test_hardening_rows import insert_job, sql

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


def dangling_edges(*edges: tuple[int, int], satisfied: bool = False) -> None:
    """Edges (job, depends_on) naming jobs that don't exist: the foreign keys are
    triggers, which a replica session skips (a restore of part of a dump)."""
    sql("SET session_replication_role = replica")
    for job_id, depends_on_id in edges:
        sql(
            "INSERT INTO pgjobs_jobdependency (job_id, depends_on_id, satisfied)"
            " VALUES (%s, %s, %s)",
            [job_id, depends_on_id, satisfied],
        )
    sql("SET session_replication_role = origin")


GONE = 987_654_321  # no job has this id


@pytest.mark.django_db(transaction=True)
def test_jobs_with_edges_to_jobs_that_dont_exist_finish_and_cancel(worker):
    """Their edges, written by another (committed) session, are updated as their
    dependents are released: PostgreSQL checks no key the update leaves as it is.
    (Written in the same transaction, it does, and refuses the finish at commit: an
    admin test saw that; no worker's transaction writes edges that way.)"""
    runs = insert_job()
    cancelled = insert_job(state="'scheduled'", run_at="now() + interval '1 day'")
    dangling_edges((GONE, runs), (GONE + 1, cancelled))
    assert worker.drain() == {"completed": 1}
    assert Job.objects.get(pk=cancelled).cancel().state == "cancelled"
    assert sorted(JobDependency.objects.values_list("satisfied", flat=True)) == [True, True]


def test_a_job_waiting_for_a_job_that_doesnt_exist_is_cancelled_saying_so(worker, caplog):
    """It waited forever, in no list of problems. The scheduler's prune routine now
    cancels it, as transitions.delete_many cancels the dependents of a deleted job,
    and its error names the missing job; a retry runs it."""
    stranded = insert_job(state="'waiting'", pending_dependencies="1")
    dangling_edges((stranded, GONE))
    counted_wrong = insert_job(state="'waiting'", pending_dependencies="2147483647")
    fine = Job.enqueue(ADD, [1, 2], run_at=timezone.now() + timedelta(hours=1))
    waits = Job.enqueue(ADD, [3, 4], depends_on=[fine])
    behind = Job.enqueue(ADD, [5, 6], depends_on=[stranded])  # cancelled with it
    assert housekeeping.prune(timezone.now()) == 2  # and `behind`, by the trigger
    assert states() == {stranded: "cancelled", counted_wrong: "cancelled", fine.pk: "scheduled",
                        waits.pk: "waiting", behind.pk: "cancelled"}  # fmt: skip
    errors = {pk: Job.objects.get(pk=pk).errors[-1]["error"] for pk in (stranded, counted_wrong)}
    assert errors == {
        stranded: f"DependencyFailed: job {GONE} does not exist",
        counted_wrong: "DependencyFailed: it waits for 2147483647 dependencies, but no job it "
        "depends on is unfinished",
    }
    assert f"job {stranded} ({ADD}) can never run" in caplog.text
    assert Job.objects.get(pk=behind.pk).errors[-1]["error"] == (
        f"DependencyFailed: job {stranded} ended cancelled"
    )
    assert Job.objects.get(pk=stranded).retry().state == "available"
    assert worker.drain() == {"completed": 1}
    assert housekeeping.prune(timezone.now()) == 0  # nothing more to do


@pytest.mark.django_db(transaction=True)
def test_a_running_job_adds_to_its_pipeline_past_an_edge_to_a_job_that_doesnt_exist(worker):
    """The edges it copies went to the missing job too: the insert failed at commit,
    and the running job with it, on every attempt."""
    splitter, gather = enqueue_pipeline(
        split.spec(2), total.using(pass_results=True).spec(), name="odd"
    )
    dangling_edges((GONE, splitter[0].pk))
    assert worker.drain() == {"completed": 4}
    assert Job.objects.get(pk=gather[0].pk).result == 2 + 0 + 1


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
