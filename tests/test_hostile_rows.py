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
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import timezone as fixed_offset
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from django_pgjobs import (
    clocks,
    events,
    health,
    housekeeping,
    maintenance,
    metrics,
    queues,
    schedules,
    stats,
    testing,
    transitions,
    workers,
)
from django_pgjobs.admin.dashboard import dashboard_data, no_worker_warning
from django_pgjobs.api.tokens import authenticate, issue
from django_pgjobs.connectors import get_connector
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.events import Event
from django_pgjobs.exceptions import (
    InvalidOption,
    InvalidQueueName,
    UnknownConnector,
    UnknownTask,
)
from django_pgjobs.liveness import alive
from django_pgjobs.models import ApiToken, Job, JobDependency, Queue, Schedule
from django_pgjobs.models import WorkerProcess as WorkerRow
from django_pgjobs.pipelines import enqueue_pipeline
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.worker import Worker
from testproject.demo.tasks import split, total
from tests.conftest import ROOT, WorkerProcess
from tests.factories import ConnectorFactory, JobFactory, QueueFactory, WorkerProcessFactory
from tests.test_admin_hostile import MARKUP, json_of
from tests.test_admin_hostile import ODD_ROWS as ADMIN_ROWS
from tests.test_hardening_rows import ODD_ROWS as RUN_ROWS
from tests.test_hardening_rows import insert_job, sql, without_time_constraint  # noqa: F401

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


@pytest.mark.parametrize("ended", ["completed", "discarded", "cancelled"])
def test_prune_deletes_a_finished_job_without_a_finish_time_by_its_last_known_time(
    worker, checked_at_once, ended
):
    """A finished job whose finished_at is NULL (written by SQL: every transition
    writes one) was never pruned. It is dated by the latest time the row knows it
    had not finished yet (its last attempt's start, or its creation), and kept as
    long as a dated job would be, and while a job not finished yet depends on it."""
    old = "now() - interval '30 days'"
    undated = insert_job(state=f"'{ended}'", created_at=old)
    attempted = insert_job(state=f"'{ended}'", created_at=old, attempt="1",
                           attempted_at="now() - interval '1 day'")  # fmt: skip
    recent = insert_job(state=f"'{ended}'", created_at="now() - interval '1 day'")
    needed = insert_job(state=f"'{ended}'", created_at=old)
    waits = insert_job(state="'waiting'", pending_dependencies="1")
    JobDependency.objects.create(job_id=waits, depends_on_id=needed)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 1
    assert set(states()) == {attempted, recent, needed, waits}
    assert maintenance.prune_finished(timezone.now(), timedelta(hours=1)) == 2
    assert set(states()) == {needed, waits} and undated not in states()


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


@pytest.mark.parametrize("ended", ["completed", "discarded", "cancelled"])
def test_a_job_waiting_on_an_edge_its_finished_dependency_never_released_is_cancelled(
    worker, caplog, ended
):
    """An unsatisfied edge to a job that had already finished (written by SQL, or
    restored apart from its jobs): a dependency releases its edges as it finishes,
    once, so the job waited forever, in no list of problems. Cancelled as one whose
    dependency is missing, its error says which job and how it ended; a retry runs it."""
    done = insert_job(state=f"'{ended}'", attempt="1", attempted_at="now()",
                      finished_at="now()")  # fmt: skip
    stranded = insert_job(state="'waiting'", pending_dependencies="1")
    dangling_edges((stranded, done))
    fine = Job.enqueue(ADD, [1, 2], run_at=timezone.now() + timedelta(hours=1))
    waits = Job.enqueue(ADD, [3, 4], depends_on=[fine])
    assert housekeeping.prune(timezone.now()) == 1
    assert states() == {done: ended, stranded: "cancelled", fine.pk: "scheduled",
                        waits.pk: "waiting"}  # fmt: skip
    error = Job.objects.get(pk=stranded).errors[-1]["error"]
    assert error == f"DependencyFailed: job {done} ended {ended} without releasing it"
    assert f"job {stranded} ({ADD}) can never run" in caplog.text
    assert Job.objects.get(pk=stranded).retry().state == "available"
    assert worker.drain() == {"completed": 1}
    assert housekeeping.prune(timezone.now()) == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_counting_fewer_dependencies_than_it_waits_for_is_cancelled_saying_so(worker):
    """Its counter is counted down as each dependency finishes: below zero the CHECK
    refused the dependency's finish (drain raised IntegrityError; a worker left the
    dependency executing until a rescue ran it again, for ever), and at zero it was
    released while a dependency was still running. The prune routine cancels it first,
    saying so; then its dependencies finish as any do."""
    first, second = insert_job(), insert_job()
    none_counted = insert_job(state="'waiting'", pending_dependencies="0")
    one_of_two = insert_job(state="'waiting'", pending_dependencies="1")
    fine = insert_job(state="'waiting'", pending_dependencies="2")
    dangling_edges((none_counted, first), (one_of_two, first), (one_of_two, second),
                   (fine, first), (fine, second))  # fmt: skip
    try:
        assert housekeeping.prune(timezone.now()) == 2
        cancelled = (none_counted, one_of_two)
        errors = {pk: Job.objects.get(pk=pk).errors[-1]["error"] for pk in cancelled}
        assert errors == {
            none_counted: "DependencyFailed: it counts 0 unfinished dependencies, but waits for 1",
            one_of_two: "DependencyFailed: it counts 1 unfinished dependencies, but waits for 2",
        }
        assert worker.drain() == {"completed": 3}  # the two dependencies, then `fine`
        assert states() == {first: "completed", second: "completed", none_counted: "cancelled",
                            one_of_two: "cancelled", fine: "completed"}  # fmt: skip
    finally:  # a transactional test's flush would meet the edges' keys
        sql("DELETE FROM pgjobs_jobdependency")


@pytest.mark.django_db(transaction=True)
def test_a_dependency_of_a_job_counting_fewer_than_it_waits_for_still_finishes(worker):
    """Before the prune routine finds such a job, its dependencies finish all the same
    (migration 0026): the trigger counted them off to below zero, which the CHECK
    refused, so drain raised IntegrityError and a worker left the dependency executing
    until a rescue ran it again. The count stops at zero, which releases the job."""
    first, second = insert_job(), insert_job()
    none_counted = insert_job(state="'waiting'", pending_dependencies="0")
    dangling_edges((none_counted, first), (none_counted, second))
    try:
        assert worker.drain() == {"completed": 3}  # the dependencies, then the job
        assert states() == {first: "completed", second: "completed", none_counted: "completed"}
        assert Job.objects.get(pk=none_counted).pending_dependencies == 0
    finally:  # a transactional test's flush would meet the edges' keys
        sql("DELETE FROM pgjobs_jobdependency")


def test_jobs_waiting_on_each_other_in_a_cycle_are_cancelled_saying_so(worker, caplog):
    """Edges written by SQL so that jobs wait on each other (A on B, B on A): none
    can be released, and they waited forever, in no list of problems. The prune
    routine cancels every job of the cycle, saying which jobs it is made of; a job
    waiting on one of them is cancelled after it, as behind any cancelled job, and
    a pipeline beside them (an edge to a later job too) is left alone."""
    a = insert_job(state="'waiting'", pending_dependencies="1")
    b = insert_job(state="'waiting'", pending_dependencies="1")
    c, d, e = (insert_job(state="'waiting'", pending_dependencies="1") for _ in range(3))
    runs = insert_job()
    grounded = insert_job(state="'waiting'", pending_dependencies="2")  # also on `runs`
    partner = insert_job(state="'waiting'", pending_dependencies="1")
    edges = [(a, b), (b, a), (c, d), (d, e), (e, c), (grounded, runs), (grounded, partner),
             (partner, grounded)]  # fmt: skip
    for job_id, depends_on_id in edges:
        JobDependency.objects.create(job_id=job_id, depends_on_id=depends_on_id)
    behind = Job.enqueue(ADD, [5, 6], depends_on=[a])
    first = Job.enqueue(ADD, [1, 2], run_at=timezone.now() + timedelta(hours=1))
    older = Job.enqueue(ADD, [3, 4], depends_on=[first])
    newer = Job.enqueue(ADD, [7, 8], depends_on=[first])
    JobDependency.objects.create(job_id=older.pk, depends_on_id=newer.pk)  # a later job
    Job.objects.filter(pk=older.pk).update(pending_dependencies=2)
    cycles = {a: (a, b), b: (a, b), c: (c, d, e), d: (c, d, e), e: (c, d, e),
              grounded: (grounded, partner), partner: (grounded, partner)}  # fmt: skip
    assert housekeeping.prune(timezone.now()) == len(cycles)
    assert states() == {**dict.fromkeys(cycles, "cancelled"), runs: "available",
                        behind.pk: "cancelled", first.pk: "scheduled", older.pk: "waiting",
                        newer.pk: "waiting"}  # fmt: skip
    errors = {pk: Job.objects.get(pk=pk).errors[-1]["error"] for pk in cycles}
    assert errors == {
        pk: "DependencyFailed: it waits for itself, through a dependency cycle of jobs "
        + ", ".join(map(str, members))
        for pk, members in cycles.items()
    }
    assert Job.objects.get(pk=behind.pk).errors[-1]["error"] == (
        f"DependencyFailed: job {a} ended cancelled"
    )
    for pk in cycles:
        assert caplog.text.count(f"job {pk} ({ADD}) can never run") == 1
    assert housekeeping.prune(timezone.now()) == 0  # nothing more to do
    assert worker.drain(now=timezone.now() + timedelta(hours=2)) == {"completed": 4}


def test_a_long_dependency_cycle_lists_its_first_jobs(worker):
    """A cycle of a thousand jobs is found in one pass, and its error stays short."""
    ids = [insert_job(state="'waiting'", pending_dependencies="1") for _ in range(1000)]
    for job_id, depends_on_id in zip(ids, ids[1:] + ids[:1], strict=True):
        JobDependency.objects.create(job_id=job_id, depends_on_id=depends_on_id)
    assert housekeeping.prune(timezone.now()) == 1000
    listed = ", ".join(map(str, ids[:10]))
    assert Job.objects.get(pk=ids[500]).errors[-1]["error"] == (
        f"DependencyFailed: it waits for itself, through a dependency cycle of jobs {listed}"
        " and 990 more"
    )


def waiting_rows(count: int, pending: int = 1) -> list[int]:
    """``count`` waiting jobs written in one statement, lowest id first."""
    rows = sql(
        "INSERT INTO pgjobs_job (task, queue, state, priority, attempt, max_attempts, args,"
        " kwargs, meta, errors, run_at, created_at, pending_dependencies)"
        f" SELECT '{ADD}', 'default', 'waiting', 0, 0, 3, '[]', '{{}}', '{{}}', '[]', now(),"
        " now(), %s FROM generate_series(1, %s) RETURNING id",
        [pending, count],
    )
    return sorted(row[0] for row in rows)


def waiting_edges(edges: list[tuple[int, int]]) -> None:
    JobDependency.objects.bulk_create(
        JobDependency(job_id=job_id, depends_on_id=depends_on_id) for job_id, depends_on_id in edges
    )


def hostile_graph(length: int) -> list[int]:
    """A chain of waiting jobs each waiting on the next, newer one, its end on a
    scheduled job, and each waited on by a newer job: every one of them is a place the
    cycle search starts from, and walks the rest of the chain from."""
    end = insert_job(state="'scheduled'", run_at="now() + interval '1 day'")
    chain, behind = waiting_rows(length), waiting_rows(length)
    waiting_edges([*zip(chain, [*chain[1:], end], strict=True), *zip(behind, chain, strict=True)])
    return chain + behind


@pytest.fixture
def fresh_cycle_search() -> Iterator[None]:
    maintenance.CYCLE_SEARCH.restart()
    yield
    maintenance.CYCLE_SEARCH.restart()


def test_a_hostile_graph_bounds_each_cycle_search_and_cycles_are_still_found(
    fresh_cycle_search, monkeypatch, caplog
):
    """Many waiting jobs each waiting on a long chain of newer ones made one pass walk
    the chain from each of them: 1,000 took 2 s, 2,000 took 13 s, all in the
    scheduler's maintenance. A pass now walks at most CYCLE_WALK_CAP steps, says so,
    and the next takes fewer starts after the last one done: every cycle is found in a
    few passes, and a job of no cycle is left alone."""
    graph = hostile_graph(200)  # 20,000 steps at once
    short = waiting_rows(2)
    long = waiting_rows(40)
    waiting_edges([(short[0], short[1]), (short[1], short[0])])
    waiting_edges([*zip(long, [*long[1:], long[0]], strict=True)])
    sql("ANALYZE pgjobs_job, pgjobs_jobdependency")
    monkeypatch.setattr(maintenance, "CYCLE_WALK_CAP", 2_000)
    cancelled, walks = 0, []
    for _ in range(100):
        started = time.perf_counter()
        cancelled += housekeeping.prune(timezone.now())
        walks.append(time.perf_counter() - started)
        if cancelled == 42:
            break
    print(f"\n{len(walks)} passes, each {min(walks):.3f}-{max(walks):.3f}s")
    assert cancelled == 42 and set(Job.objects.filter(pk__in=short + long).values_list(
        "state", flat=True)) == {"cancelled"}  # fmt: skip
    assert set(Job.objects.filter(pk__in=graph).values_list("state", flat=True)) == {"waiting"}
    assert "the dependency cycle search stopped after 2000 steps" in caplog.text
    assert maintenance.CYCLE_SEARCH.steps <= 2_000
    assert health.check_stranded() == health.Check(
        "stranded", True, "no waiting job that can never run; the search for cycles stopped "
        "after 2000 steps"
    )  # fmt: skip


def test_with_pruning_off_health_names_the_waiting_jobs_that_can_never_run(settings):
    """PRUNE_INTERVAL = None turns off the pass that cancels them: they waited for
    ever, and nothing said so. The health check now names them (and writes nothing);
    with pruning on it is left out, the pass cancelling them, unless asked for."""
    settings.PGJOBS = {**settings.PGJOBS, "PRUNE_INTERVAL": None}
    a = insert_job(state="'waiting'", pending_dependencies="1")
    b = insert_job(state="'waiting'", pending_dependencies="1")
    JobDependency.objects.create(job_id=a, depends_on_id=b)
    JobDependency.objects.create(job_id=b, depends_on_id=a)
    stranded = insert_job(state="'waiting'", pending_dependencies="1")
    dangling_edges((stranded, GONE))
    first = Job.enqueue(ADD, [1, 2], run_at=timezone.now() + timedelta(hours=1))
    Job.enqueue(ADD, [3, 4], depends_on=[first])  # a pipeline waiting as it should
    before = states()

    check = stranded_check()
    assert not check.ok and check.detail.startswith("3 waiting jobs can never run: ")
    assert f"job {a} ({ADD}): DependencyFailed: it waits for itself, through a " in check.detail
    assert f"job {stranded} ({ADD}): DependencyFailed: job {GONE} does not exist" in check.detail
    assert "PRUNE_INTERVAL is None" in check.detail and "pgjobs prune" in check.detail
    assert states() == before  # a probe writes nothing
    code_out = cli("health", "--max-scheduler-lag", "off")
    assert re.search(r"FAIL +stranded +3 waiting jobs can never run", code_out), code_out
    assert "stranded" not in cli("health", "--no-stranded", "--max-scheduler-lag", "off")

    settings.PGJOBS = {**settings.PGJOBS, "PRUNE_INTERVAL": 300}
    assert "stranded" not in {c.name for c in health.run_checks(scheduler_lag=None)}
    assert not stranded_check(stranded=True).ok
    assert housekeeping.prune(timezone.now()) == 3
    assert stranded_check(stranded=True) == health.Check(
        "stranded", True, "no waiting job that can never run"
    )


def test_health_names_the_first_few_of_many_jobs_that_can_never_run(settings):
    settings.PGJOBS = {**settings.PGJOBS, "PRUNE_INTERVAL": None}
    ids = [insert_job(state="'waiting'", pending_dependencies="1") for _ in range(50)]
    dangling_edges(*((pk, GONE) for pk in ids))
    detail = stranded_check().detail
    assert detail.startswith("50 waiting jobs can never run: ") and "and 47 more" in detail
    assert [f"job {pk} " in detail for pk in ids[:4]] == [True, True, True, False]


def stranded_check(**options: Any) -> health.Check:
    checks = health.run_checks(scheduler_lag=None, **options)
    return next(check for check in checks if check.name == "stranded")


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


#: Results a gather job's dependency may hold, written by SQL, that Python can't read back.
UNREADABLE_RESULTS = {
    "an integer of 5,000 digits": ("'1" + "0" * 5000 + "'", "can't be read by Python"),
    "nested 3,000 deep": ("'" + "[" * 3000 + "]" * 3000 + "'", "nested deeper than Python"),
    "a decimal past a float's range": ("'" + "9" * 400 + ".5'", "beyond a float's range"),
}


@pytest.mark.parametrize("case", UNREADABLE_RESULTS)
def test_a_gather_job_whose_dependencys_result_cant_be_read_is_discarded_saying_why(worker, case):
    """It failed every attempt with json's own ValueError ("... use
    sys.set_int_max_str_digits() to increase the limit") or RecursionError, and was
    retried for nothing; the decimal was passed to it as infinity."""
    stored, problem = UNREADABLE_RESULTS[case]
    first = Job.enqueue(ADD, [1, 2])
    gather = Job.enqueue(GATHER, depends_on=[first], pass_results=True)
    assert worker.drain(max_jobs=1) == {"completed": 1}
    sql(f"UPDATE pgjobs_job SET result = {stored} WHERE id = %s", [first.pk])
    assert worker.drain() == {"discarded": 1}
    error = Job.objects.get(pk=gather.pk).errors[-1]["error"]
    assert error.startswith(
        f"UnrunnableJob: job {gather.pk} can't run as stored: the result of job {first.pk}, "
        "which it depends on: "
    ), error
    assert problem in error


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
    # Keys only pgjobs writes: {"crashes": 25} ran the job alone as a crash suspect and
    # discarded it at its first real rescue; {"snoozed": ...} faked snoozes in the admin.
    "meta setting crashes": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"crashes": 25}),
        "meta key 'crashes' is written by pgjobs only (rescue's count of the workers lost",
    ),
    "meta setting snoozed": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"snoozed": {"count": 3}, "label": "x"}),
        "meta key 'snoozed' is written by pgjobs only (the count and the last of the job's",
    ),
    # {"smtp_sent": {fingerprint: 1}} kept the job's mail from being sent at all.
    "meta setting smtp_sent": (
        lambda: Job.enqueue(ADD, [1, 2], meta={"smtp_sent": {"0" * 32: 1}}),
        "meta key 'smtp_sent' is written by pgjobs only (the mail an smtp connector's",
    ),
    "enqueue_many by COPY, a meta setting crashes": (
        lambda: Job.enqueue_many([{"task": ADD, "meta": {"crashes": 0}}] * 150),
        "meta key 'crashes'",
    ),
    "enqueue_many, a meta setting them all": (
        lambda: Job.enqueue_many(
            [{"task": ADD, "args": [1, 2]},
             {"task": ADD, "args": [1, 2], "meta": {"pass_results": 1, "debounce": 1}}]
        ),
        "meta key 'debounce'",
    ),
    "enqueue_many by COPY, the last meta setting one": (
        lambda: Job.enqueue_many([{"task": ADD, "args": [1, 2]}] * 149
                                 + [{"task": ADD, "args": [1, 2], "meta": {"pass_results": True}}]),
        "meta key 'pass_results'",
    ),
    "a pipeline stage": (
        lambda: enqueue_pipeline([JobSpec(task=ADD, meta={"on_dependency_failure": "run"})]),
        "meta key 'on_dependency_failure'",
    ),
    # Taken for its truth: "no" passed the dependencies' results all the same. 1 comes
    # after True, equal to it, so that a cached check of True can't take it.
    **{
        f"pass_results={shown}": (
            lambda value=value: Job.enqueue_many(
                [{"task": GATHER, "depends_on": [first_job()], "pass_results": True},
                 {"task": GATHER, "depends_on": [first_job()], "pass_results": value}]),
            f"pass_results must be True or False, not {shown}",
        )
        for value, shown in [("no", "'no'"), (1, "1"), ([], "[]")]
    },
    # A NaN never ran out: job.wait() waited forever. A string failed in the arithmetic.
    **{
        f"wait(timeout={shown})": (
            lambda value=value: first_job().wait(timeout=value),
            "timeout must be a number of seconds",
        )
        for value, shown in [(math.nan, "nan"), (math.inf, "inf"), (-1, "-1"), ("1", "'1'"),
                             (True, "True"), (10**400, "10**400")]
    },
    # A job never saved: retry() said "job None: cannot go from ... to ...", cancel()
    # and wait() raised Job.DoesNotExist ("Job matching query does not exist").
    **{
        f"an unsaved job's {action}()": (
            lambda action=action: asyncio.run(Job(task=ADD).async_wait())
            if action == "async_wait" else getattr(Job(task=ADD), action)(),
            f"job was never saved (it has no id): {action}() needs a job from Job.enqueue()",
        )
        for action in ("retry", "cancel", "wait", "async_wait")
    },
    "async_wait(timeout=nan)": (
        lambda: asyncio.run(first_job().async_wait(timeout=math.nan)),
        "timeout must be a number of seconds",
    ),
}  # fmt: skip


HUGE = 10**5000  # repr() raises ValueError: "Exceeds the limit (4300 digits)"

#: The scheduler's pass and maintenance, given a now that no clock gives: a naive one
#: made the scheduler's rescue fail with TypeError (a traceback each pass) and wrote
#: naive times; text was a TypeError or Django's ValidationError; past 9999, an
#: IntegrityError that aborted the caller's transaction.
NOW_TAKERS = [
    ("Scheduler().run_once", lambda now: Scheduler().run_once(now)),
    ("Scheduler().fire_due", lambda now: Scheduler(routines=[]).fire_due(now)),
    ("rescue_orphaned", lambda now: maintenance.rescue_orphaned(now)),
    ("prune_finished", lambda now: maintenance.prune_finished(now, timedelta(days=1))),
    ("prune_ticks", lambda now: schedules.prune_ticks(now, timedelta(days=1))),
    ("housekeeping.prune", lambda now: housekeeping.prune(now)),
]

#: The operator actions and readers that take a ``now``: checked and converted as the
#: drain's and the scheduler's is (``limits.given_now``). Sent as given, a UTC offset
#: PostgreSQL doesn't take (+20:00, or one with seconds) was a DataError that aborted
#: the caller's transaction, and a naive one or one past 9999 failed in SQL too.
NOW_READERS = [
    ("transitions.retry", lambda now: transitions.retry(first_job(), now)),
    ("transitions.retry_many", lambda now: transitions.retry_many(Job.objects.all(), now)),
    ("transitions.cancel", lambda now: transitions.cancel(first_job(), now)),
    ("transitions.cancel_many", lambda now: transitions.cancel_many(Job.objects.all(), now)),
    ("transitions.delete_many", lambda now: transitions.delete_many(Job.objects.all(), now)),
    ("stats.queue_depths", lambda now: stats.queue_depths(now)),
    ("stats.throughput", lambda now: stats.throughput(now)),
    ("stats.worker_summary", lambda now: stats.worker_summary(now)),
    ("stats.workers", lambda now: stats.workers(now)),
    # The worker's own transitions and readers, called by hand: a snooze's now (and its
    # until), an outcome's finished_at, a token's last use, a liveness cut-off.
    ("transitions.snooze", lambda now: transitions.snooze(first_job(), LATER, now)),
    ("transitions.complete", lambda now: transitions.complete(first_job(), 1, now)),
    ("transitions.fail", lambda now: transitions.fail(first_job(), ValueError("x"), now)),
    ("stats.oldest_due", lambda now: stats.oldest_due(now)),
    ("stats.due_jobs", lambda now: stats.due_jobs(now).count()),
    ("liveness.alive", lambda now: WorkerRow.objects.filter(alive(timedelta(1), now)).count()),
    ("dashboard_data", lambda now: dashboard_data(now)),
    ("no_worker_warning", lambda now: no_worker_warning(now)),
    ("tokens.authenticate", lambda now: authenticate(f"Bearer {issue('t', ['*'])[1]}", now)),
    # A cancellation's finished_at (housekeeping.prune checked its now already).
    ("maintenance.cancel_stranded", lambda now: maintenance.cancel_stranded(now)),
]

#: A time a snooze lasts until, in no zone PostgreSQL takes: read as its instant.
LATER = datetime(2031, 5, 2, tzinfo=fixed_offset(timedelta(hours=20)))

#: Calls that must raise another documented error, with this message, writing nothing.
OTHER_REFUSALS: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    # The message's repr() of the name raised ValueError instead of the error.
    "queue=10**5000": (lambda: Job.enqueue(ADD, [1, 2], queue=HUGE), InvalidQueueName,
                       "invalid queue name <a int too large to show>"),
    "connector=10**5000": (lambda: Job.enqueue(ADD, [1, 2], connector=HUGE), UnknownConnector,
                           "unknown connector <a int too large to show>"),
    "task 10**5000": (lambda: Job.enqueue(HUGE), UnknownTask,
                      "unknown task <a int too large to show>"),
    # A NUL reached the database as a DataError, a lone surrogate was psycopg's
    # UnicodeEncodeError and 10**5000 int()'s ValueError: no connector has such a name.
    **{
        f"get_connector({shown})": (lambda name=name: get_connector(name), UnknownConnector,
                                    f"unknown connector {re.escape(said)}")
        for name, shown, said in [("a\x00b", "a NUL", r"'a\x00b'"),
                                  ("\ud800", "a lone surrogate", r"'\ud800'"),
                                  (HUGE, "10**5000", "<a int too large to show>")]
    },
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
    # A string's characters were taken for ids: request_stop("12") stopped workers 1
    # and 2, set_enabled("12", True) enabled schedules 1 and 2.
    "request_stop('12')": (lambda: workers.request_stop("12"), InvalidOption,
                           "worker_ids must be a list of ids, not '12'"),
    "request_stop(['x'])": (lambda: workers.request_stop(["x"]), InvalidOption,
                            "worker_ids must be a whole number, not 'x'"),
    "set_enabled('12')": (lambda: schedules.set_enabled("12", True), InvalidOption,
                          "schedule_ids must be a list of ids"),
    "set_enabled(2**70)": (lambda: schedules.set_enabled([2**70], True), InvalidOption,
                           "schedule_ids must be between 1 and 9223372036854775807"),
    "set_enabled('yes')": (lambda: schedules.set_enabled([1], "yes"), InvalidOption,
                           "enabled must be True or False"),
    # Maintenance: 0 jobs a batch looped for ever; a negative age deleted jobs finished
    # just now; a negative staleness took every live worker's jobs; NaN, an id of
    # text or past bigint were ValueError, OverflowError or DataError.
    "prune_finished(batch_size=0)": (
        lambda: maintenance.prune_finished(timezone.now(), timedelta(days=1), batch_size=0),
        InvalidOption, "batch_size must be between 1 and 100000, not 0"),
    "prune_finished(older_than=-1 day)": (
        lambda: maintenance.prune_finished(timezone.now(), timedelta(days=-1)), InvalidOption,
        "older_than must be a timedelta of 0 or more"),
    "prune_finished(older_than=7)": (
        lambda: maintenance.prune_finished(timezone.now(), 7), InvalidOption,
        "older_than must be a timedelta of 0 or more, not 7"),
    # timedelta.max (or any age reaching before year 1) raised OverflowError.
    **{
        f"{name}(older_than={shown})": (
            lambda call=call, value=value: call(timezone.now(), value), InvalidOption,
            "older_than reaches before year 1")
        for name, call in [("prune_finished", maintenance.prune_finished),
                           ("prune_ticks", schedules.prune_ticks)]
        for value, shown in [(timedelta.max, "timedelta.max"),
                             (timedelta(days=800_000), "800k days")]
    },
    **{
        f"rescue_orphaned(stale_after={shown})": (
            lambda value=value: maintenance.rescue_orphaned(timezone.now(), stale_after=value),
            InvalidOption, "stale_after must be a number of seconds above 0")
        for value, shown in [(-1, "-1"), (0, "0"), (math.nan, "nan"), (10**400, "10**400")]
    },
    # Worker(concurrency=0) meant the setting; 10**8 built that many threads before
    # its first claim. A poll interval of -1 or NaN made Event.wait return at once
    # (the idle loop never paused), one of 1e400 raised OverflowError there.
    **{
        f"Worker({option}={shown})": (
            lambda option=option, value=value: Worker(**{option: value}), InvalidOption,
            f"{option} must be",
        )
        for option, value, shown in [
            ("concurrency", 0, "0"), ("concurrency", 10**8, "10**8"), ("concurrency", 2.0, "2.0"),
            ("poll_interval", -1, "-1"), ("poll_interval", math.nan, "nan"),
            ("poll_interval", 1e400, "1e400"), ("poll_interval", "2", "'2'"),
        ]
    },
    # A prefetch of 10**9 claimed the whole queue into one worker's memory.
    **{
        f"Worker(prefetch={shown})": (
            lambda value=value: Worker(prefetch=value), InvalidOption,
            f'prefetch must be "auto" or 0 to 10,000 jobs, not {re.escape(shown)}',
        )
        for value, shown in [(10**9, "1000000000"), (-1, "-1"), (True, "True"),
                             ("fast", "'fast'"), (HUGE, "<a int too large to show>")]
    },
    # A naive now was claimed with, then the outcome's arithmetic raised TypeError and
    # left the batch's other jobs executing; text or a time past 9999 was a DataError or
    # IntegrityError in the claim, aborting the caller's transaction. (NOW_TAKERS: the
    # scheduler and maintenance.)
    **{
        f"{name}(now={shown})": (
            lambda call=call, value=value: call(value), InvalidOption,
            re.escape(f"now {message}"))
        for name, call in [("Worker().drain", lambda now: Worker().drain(now=now)),
                           ("Worker().run_once", lambda now: Worker().run_once(now=now)),
                           ("testing.drain", lambda now: testing.drain(now=now)),
                           *NOW_TAKERS, *NOW_READERS]
        for value, shown, message in [
            (timezone.now().replace(tzinfo=None), "naive", "must be timezone-aware"),
            ("2020", "'2020'", "must be a timezone-aware datetime, not str '2020'"),
            (datetime(9999, 12, 31, 23, tzinfo=UTC), "9999-12-31", "9999-12-31T23:00:00+00:00 "
             "is out of range"),
        ]
    },
    # A now a year or less before 9999-12-31: a retry, a snooze or rescue's horizon
    # computed from it lay past the times a row holds (IntegrityError, or OverflowError,
    # with the drain's claimed jobs left executing). prune_finished and prune_ticks look
    # back only and take it; housekeeping.prune, the scheduler's routine, refuses it
    # with the rest of a pass.
    **{
        f"{name}(now=9999-12-30)": (
            lambda call=call: call(datetime(9999, 12, 30, 23, tzinfo=UTC)), InvalidOption,
            re.escape("now 9999-12-30T23:00:00+00:00 is too late: it must lie before "
                      "9998-12-31, UTC"))
        for name, call in [("Worker().drain", lambda now: Worker().drain(now=now)),
                           ("Worker().run_once", lambda now: Worker().run_once(now=now)),
                           ("testing.drain", lambda now: testing.drain(now=now)),
                           *NOW_TAKERS[:3], NOW_TAKERS[5], *NOW_READERS]
    },
    **{
        f"drain(max_jobs={shown})": (
            lambda value=value: Worker().drain(max_jobs=value), InvalidOption,
            f"max_jobs must be {message}")
        for value, shown, message in [("1", "'1'", "a whole number, not '1'"),
                                      (-1, "-1", "between 0 and"), (1.5, "1.5", "a whole")]
    },
    "rescue_orphaned(dead_workers=['x'])": (
        lambda: maintenance.rescue_orphaned(timezone.now(), dead_workers=["x"]), InvalidOption,
        "dead_workers must be a whole number"),
    "rescue_orphaned(dead_workers=[2**70])": (
        lambda: maintenance.rescue_orphaned(timezone.now(), dead_workers=[2**70]),
        InvalidOption, "dead_workers must be between 1 and"),
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
    worker = WorkerProcessFactory()
    held = insert_job(state="'executing'", lease="gen_random_uuid()", attempted_at="now()",
                      worker_id=str(worker.pk))  # fmt: skip
    done = JobFactory(completed=True)
    Schedule.objects.create(name="s", cron="* * * * *", task=ADD, enabled=False)
    everything = (
        lambda: list(Job.objects.order_by("pk").values_list("pk", "state")),
        lambda: list(Queue.objects.values_list("name", "paused")),
        lambda: list(WorkerRow.objects.values_list("pk", "stop_requested")),
        lambda: list(Schedule.objects.values_list("pk", "enabled")),
    )
    before = [read() for read in everything]
    act, error, message = ALL_REFUSED[call]
    with transaction.atomic():
        with pytest.raises(error, match=message):
            act()
        assert [read() for read in everything] == before  # nothing written, still usable
    assert {first.pk, held, done.pk} <= set(Job.objects.values_list("pk", flat=True))


#: Offsets Python takes and PostgreSQL refuses (over 15:59, or with seconds or a fraction).
ODD_OFFSETS = [timedelta(hours=20), timedelta(hours=5, seconds=7, microseconds=3),
               timedelta(hours=-23, minutes=59)]  # fmt: skip


@pytest.mark.parametrize("offset", ODD_OFFSETS, ids=str)
@pytest.mark.parametrize("name", [name for name, _ in NOW_READERS])
def test_a_now_in_any_zone_python_takes_is_read_as_its_instant(name, offset):
    call = dict(NOW_READERS)[name]
    first = JobFactory(retryable=True)  # first_job(): retried, or cancelled
    done = JobFactory(completed=True)
    now = datetime(2031, 5, 1, 12, tzinfo=fixed_offset(offset))
    with transaction.atomic():
        call(now)
        assert Job.objects.count() >= 0  # the caller's transaction is still usable
    if name == "transitions.retry":
        assert Job.objects.get(pk=first.pk).run_at == now
    if name == "transitions.cancel_many":
        assert Job.objects.get(pk=first.pk).finished_at == now
        assert Job.objects.get(pk=done.pk).finished_at != now


def test_a_wait_of_zero_seconds_still_times_out_at_once():
    with pytest.raises(TimeoutError, match="did not finish within 0s"):
        first_job().wait(timeout=0)


# -- rescue -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns",
    [
        {"worker_id": "{future}"},  # its worker's heartbeat is in 9999
        {"attempted_at": "'9999-12-30 00:00:00+00'"},  # no worker, claimed in 9999
        {"attempted_at": "NULL"},  # no worker, never claimed
    ],
    ids=["worker heartbeat in 9999", "claimed in 9999", "never claimed"],
)
def test_a_job_held_by_no_live_worker_whatever_its_times_say_is_rescued(columns):
    """Rescue waited for the heartbeat (or the claim) to be older than
    WORKER_STALE_AFTER: one in the future, or none, never was, and the job stayed
    executing forever. Heartbeats are stamped by the database's clock: one further
    ahead of it than a stale one is behind is no live worker's."""
    future = WorkerProcessFactory()
    alive = WorkerProcessFactory()
    sql("UPDATE pgjobs_workerprocess SET heartbeat_at = '9999-12-30 00:00:00+00' WHERE id = %s",
        [future.pk])  # fmt: skip
    held = {"state": "'executing'", "lease": "gen_random_uuid()", "attempt": "1",
            "attempted_at": "now()"}  # fmt: skip
    values = {key: value.format(future=future.pk) for key, value in columns.items()}
    odd = insert_job(**{**held, **values})
    kept = insert_job(**held, worker_id=str(alive.pk))
    assert maintenance.rescue_orphaned(clocks.database_now()) == 1
    assert states() == {odd: "available", kept: "executing"}
    assert Job.objects.get(pk=odd).errors[-1]["error"].startswith("WorkerLost: worker ")
    assert list(WorkerRow.objects.values_list("pk", flat=True)) == [alive.pk]


@pytest.mark.usefixtures("without_time_constraint")
def test_a_claim_whose_last_row_cant_be_loaded_discards_it_and_runs_the_others(worker):
    """Reading past an unloadable row moved the cursor beyond the result when the row
    was the last one: an IndexError lost the whole claim after it committed, leaving
    every job it claimed executing, and the next claim took the same row again."""
    plain = Job.enqueue(ADD, [1, 2], priority=1)  # claimed first, so the odd row is last
    odd = insert_job(run_at="'0001-01-01 00:00:00+14'")
    assert worker.drain() == {"completed": 1, "discarded": 1}
    assert states() == {plain.pk: "completed", odd: "discarded"}


# -- rate windows -------------------------------------------------------------------------

#: Starts a rate window can hold (written by SQL) that no worker recorded: after its clock.
STARTS_NO_WORKER_RECORDED = pytest.mark.parametrize(
    "starts",
    [
        "ARRAY['infinity'::timestamptz]",
        "ARRAY['infinity'::timestamptz, 'infinity'::timestamptz, NULL]",
        "ARRAY['9999-12-30 00:00:00+00'::timestamptz, '-infinity']",
        "ARRAY[now() + interval '1 year']",
    ],
    ids=["infinity", "infinity twice and NULL", "9999 and -infinity", "a year ahead"],
)


@STARTS_NO_WORKER_RECORDED
def test_a_rate_window_holding_starts_no_worker_recorded_lets_the_queue_run(worker, starts):
    """A start after the window's clock reads can't have been recorded (starts go by
    that clock): counted, it kept the window full until then, so the limited queue
    ran nothing; one of 'infinity' could not be loaded, and every claim of the queue
    raised."""
    Queue.objects.create(name="limited", rate_limit=1, rate_period=1)
    job = Job.enqueue(ADD, [1, 2], queue="limited")
    sql("INSERT INTO pgjobs_ratewindow (scope, starts, expires_at)"
        f" VALUES ('queue:limited', {starts}, '9999-12-30 00:00:00+00')")  # fmt: skip
    assert Worker(["limited"], concurrency=2).drain() == {"completed": 1}
    assert Job.objects.get(pk=job.pk).result == 3
    [(kept,)] = sql("SELECT cardinality(starts) FROM pgjobs_ratewindow")
    assert kept == 1  # the start just taken: the others are dropped as it is recorded


@STARTS_NO_WORKER_RECORDED
def test_a_key_window_holding_starts_no_worker_recorded_lets_the_key_run(worker, starts):
    """As a queue's window (above), a key's under key_rate_limit: its starts after the
    claim's clock were counted, so the key's jobs waited until then, for ever for
    'infinity', while the queue's other keys ran."""
    Queue.objects.create(name="keyed", key_rate_limit=1, key_rate_period=60)
    job = Job.enqueue(ADD, [1, 2], queue="keyed", concurrency_key="k")
    other = Job.enqueue(ADD, [3, 4], queue="keyed", concurrency_key="other")
    sql("INSERT INTO pgjobs_ratewindow (scope, starts, expires_at)"
        f" VALUES ('key:keyed/k', {starts}, '9999-12-30 00:00:00+00')")  # fmt: skip
    assert Worker(["keyed"], concurrency=2).drain() == {"completed": 2}
    assert Job.objects.get(pk=job.pk).result == 3 and Job.objects.get(pk=other.pk).result == 7
    [(kept,)] = sql("SELECT cardinality(starts) FROM pgjobs_ratewindow WHERE scope = 'key:keyed/k'")
    assert kept == 1  # the start just taken: the others are dropped as it is recorded


# -- odd job rows through a real worker ------------------------------------------------------

#: A file that a task name written as a dotted path to ``os.system`` would create.
CANARY = ROOT / ".pytest_cache" / f"hostile-canary-{os.getpid()}"


def meta_of(value: object) -> dict[str, str]:
    return {"meta": json_of(value)}


#: Job rows no code of ours writes (within the CHECKs): what a worker leaves each in,
#: and what its last error starts with (None: no error recorded).
ODD_JOBS: dict[str, tuple[dict[str, str], str, str | None]] = {
    # Task names resolve against the registry only: never imported, never called.
    # (Retried, as a worker on newer code may know them: test_version_skew.py.)
    "task naming os.system": (
        {"task": "'os.system'", "args": json_of([f"touch {CANARY}"])}, "retryable", "UnknownTask"),
    "task naming builtins.exec": (
        {"task": "'builtins.exec'", "args": json_of(["raise SystemExit(3)"])}, "retryable",
        "UnknownTask"),
    "task naming a test helper": (
        {"task": "'tests.test_hardening_rows.sql'", "args": json_of(["DROP TABLE pgjobs_queue"])},
        "retryable", "UnknownTask"),
    "task naming a module nothing imported": (
        {"task": "'tests.import_canary.planted'"}, "retryable", "UnknownTask"),
    # Meta keys the code reads, of every wrong type: each is ignored or replaced.
    "meta debounce a string": (meta_of({"debounce": "x"}), "completed", None),
    "meta debounce of odd fields": (
        meta_of({"debounce": {"key": 5, "seconds": "soon", "until": []}}), "completed", None),
    "meta pass_results a string": (
        {"task": f"'{GATHER}'", **meta_of({"pass_results": "yes"})}, "completed", None),
    "meta on_dependency_failure a list": (
        meta_of({"on_dependency_failure": ["run"]}), "completed", None),
    "meta crashes a string": (meta_of({"crashes": "many"}), "completed", None),
    "meta concurrency_key an object": (meta_of({"concurrency_key": {"a": 1}}), "completed", None),
    "meta snoozed a string": (meta_of({"snoozed": "yes"}), "completed", None),
    "meta labels of odd types": (
        meta_of({"schedule": [1], "pipeline": {"a": None}, "fire_at": 5, "tenant": None,
                 "otel": [1, 2]}), "completed", None),
    # Arguments of odd JSON that Python reads, run as they are.
    "args holding 1e400": ({"args": "'[1e400, 1]'"}, "completed", None),
    "kwargs with a NUL in a key": (
        {"kwargs": r"""'{"a\\u0000": 1}'""", "args": "'[1, 2]'"}, "retryable",
        "ArgumentMismatch: job "),  # its arguments don't fit: add() has no parameter 'a\x00'

    "args of 100,000 items": ({"task": f"'{GATHER}'", "args": json_of([0] * 100_000)},
                              "completed", None),
    # Counters and limits at their ends.
    "timeout of a year": ({"timeout": "31536000"}, "completed", None),
    "attempt below the counter's limit": (
        {"attempt": "2147483646", "max_attempts": "2147483647"}, "completed", None),
    "no attempt left": ({"attempt": "5", "max_attempts": "1", "args": """'[1, "x"]'"""},
                        "discarded", "TypeError"),
    "priority lowest": ({"priority": "-32768"}, "completed", None),
    "connector of a kind nobody registered": (
        {"task": "'django_pgjobs.connectors.tasks.call'", "connector": "'oddkind'"}, "retryable",
        "ConnectorMisconfigured: connector 'oddkind' is misconfigured: kind: unknown connector"),
}  # fmt: skip


@pytest.fixture
def odd_jobs() -> dict[str, int]:
    ConnectorFactory(name="oddkind")
    sql("UPDATE pgjobs_connector SET kind = 'nope' WHERE name = 'oddkind'")
    return {name: insert_job(**columns) for name, (columns, _, _) in ODD_JOBS.items()}


def test_a_worker_ends_every_odd_job_clearly_and_runs_the_others(worker, odd_jobs):
    before = Job.enqueue(ADD, [1, 2])
    after = Job.enqueue(ADD, [3, 4])
    worker.drain()
    ended = {name: Job.objects.get(pk=pk) for name, pk in odd_jobs.items()}
    assert {name: job.state for name, job in ended.items()} == {
        name: state for name, (_, state, _) in ODD_JOBS.items()
    }
    for name, (_, _, error) in ODD_JOBS.items():
        errors = ended[name].errors
        if error is None:
            assert errors == [], (name, errors)
        else:
            assert errors[-1]["error"].startswith(error), (name, errors[-1])
    assert Job.objects.get(pk=before.pk).result == 3 and Job.objects.get(pk=after.pk).result == 7
    assert ended["args holding 1e400"].result == 10**400 + 1  # jsonb keeps it as a decimal
    assert ended["attempt below the counter's limit"].attempt == 2147483647
    assert "tests.import_canary" not in sys.modules and not CANARY.exists()


# -- odd rows in every table, through every reader --------------------------------------------


@pytest.fixture
def odd_rows_everywhere(odd_jobs: dict[str, int]) -> dict[str, int]:
    """This file's odd jobs, the admin's and the hardening tests', and odd rows in
    every other table a worker, the scheduler, the API or the CLI reads."""
    jobs = dict(odd_jobs)
    jobs.update({f"admin: {name}": insert_job(**cols) for name, cols in ADMIN_ROWS.items()})
    jobs.update({f"rows: {name}": insert_job(**cols) for name, (cols, _) in RUN_ROWS.items()})
    for name, value in [("NaN", "a\nb"), ("Infinity", ""), ("-Infinity", MARKUP)]:
        worker = WorkerProcessFactory(host=value)
        sql("UPDATE pgjobs_workerprocess SET clock_skew = %s, queues = %s, pid = 2147483647,"
            " concurrency = 0 WHERE id = %s", [name, '{"a": [1, null]}', worker.pk])  # fmt: skip
    from_the_future = WorkerProcessFactory()
    sql("UPDATE pgjobs_workerprocess SET heartbeat_at = '9999-12-30 00:00:00+00' WHERE id = %s",
        [from_the_future.pk])  # fmt: skip
    jobs["held by a worker whose heartbeat is in 9999"] = insert_job(
        state="'executing'", lease="gen_random_uuid()", attempt="1", attempted_at="now()",
        worker_id=str(from_the_future.pk),
    )  # fmt: skip
    sql(
        "INSERT INTO pgjobs_schedulerprocess (host, pid, started_at, heartbeat_at, clock_skew)"
        " VALUES ('', 2147483647, '0001-01-02 00:00:00+00', '9999-12-30 00:00:00+00', 'NaN')"
    )
    QueueFactory(name="default")
    for name, columns in ODD_QUEUES.items():
        QueueFactory(name=name)
        sql(f"UPDATE pgjobs_queue SET {columns} WHERE name = %s", [name])
        jobs[f"job of queue {name}"] = insert_job(queue=f"'{name}'")
    ConnectorFactory(name="oddconfig")
    sql("UPDATE pgjobs_connector SET config = '[1]', secret_names = '\"x\"',"
        " encrypted_secrets = 'not a token', throttled_until = '9999-12-30 00:00:00+00',"
        " concurrency = 2147483647 WHERE name = 'oddconfig'")  # fmt: skip
    jobs["job of a connector throttled until 9999"] = insert_job(
        task="'django_pgjobs.connectors.tasks.call'", connector="'oddconfig'"
    )
    for name, columns in ODD_SCHEDULES.items():
        schedule = Schedule.objects.create(name=name, cron="* * * * *", task=ADD, args=[1, 2])
        sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'")
        sql(f"UPDATE pgjobs_schedule SET {columns} WHERE id = %s", [schedule.pk])
    sql("INSERT INTO pgjobs_routine (name, next_run_at, last_result) VALUES"
        " ('prune', '9999-12-30 00:00:00+00', %s), ('rescue', '0001-01-02 00:00:00+00', '')",
        [MARKUP])  # fmt: skip
    return jobs


#: Queue rows within the CHECKs that no form writes.
ODD_QUEUES = {
    "zero": "concurrency = 0",
    "huge": "concurrency = 2147483647, key_concurrency = 2147483647, priority = -32768,"
    " max_attempts = 2147483647, rate_limit = 10000, rate_period = 31536000",
    "keyed": "key_concurrency = 1, key_rate_limit = 1, key_rate_period = 1e-300",
}

#: Schedule rows written around Schedule.save()'s checks, each due now.
ODD_SCHEDULES = {
    "unknown zone": "timezone = 'Nowhere/Zone'",
    "empty cron": "cron = ''",
    "cron of markup": f"cron = '{MARKUP}'",
    "task naming os.system": f"task = 'os.system', args = '{json.dumps([f'touch {CANARY}'])}'",
    "queue overlap behind job -7": "overlap = 'queue', last_job_id = -7",
    "skip overlap behind the largest id": "overlap = 'skip', last_job_id = 9223372036854775807",
    "catching up from year 1": "catch_up = 'all', catch_up_limit = 5,"
    " next_fire_at = '0001-01-02 00:00:00+00'",
    "jitter of a day": "jitter = 86400",
}


def cli(*args: str) -> str:
    """``manage.py pgjobs ARGS``; a check that fails (health) is fine, a crash is not."""
    out = io.StringIO()
    try:
        call_command("pgjobs", *args, stdout=out, stderr=io.StringIO())
    except CommandError as refused:
        assert refused.returncode == 1 and args[0] == "health", (args, refused)
    return out.getvalue()


READINGS = [
    ["stats"], ["stats", "--json"], ["list", "--limit", "10000"], ["list", "--json", "--limit",
    "10000"], ["list", "--state", "waiting"], ["schedules", "--next", "100"],
    ["schedules", "--json"], ["health"], ["health", "--json", "--max-age", "1s"],
    ["health", "--stranded"],
]  # fmt: skip


def test_every_reader_survives_odd_rows_in_every_table(client, worker, odd_rows_everywhere):
    jobs = odd_rows_everywhere
    token = issue("ci", ["*"], can_run=True)[1]
    headers = {"Authorization": f"Bearer {token}"}

    def read_everything() -> None:
        for args in READINGS:
            if "--json" in args:
                json.loads(cli(*args))
            else:
                cli(*args)
        for accept in ("", "application/openmetrics-text; version=1.0.0"):
            text, _ = metrics.exposition(accept)
            assert b"pgjobs_database_up 1.0" in text
            assert b'queue="a\\nb"' in text and b'queue="a\nb"' not in text  # escaped
        for pk in Job.objects.values_list("pk", flat=True):
            cli("show", str(pk))
            assert json.loads(cli("show", "--json", str(pk)))["id"] == pk
            answer = client.get(f"/jobs/{pk}", headers=headers)
            assert answer.status_code == 200 and answer.json()["id"] == pk, answer.content[:300]

    read_everything()
    now = clocks.database_now()
    report = Scheduler().run_once(now)  # every schedule due, and both routines
    assert set(report.routines) == {"rescue", "prune"}  # a prune due in 9999 is due now
    fired = {f.schedule: f.job_id or f.error for f in report.fired}
    assert fired["task naming os.system"].startswith("UnknownTask: unknown task 'os.system'")
    assert all(isinstance(fired[name], int) for name in list(ODD_SCHEDULES)[4:]), fired
    held = Job.objects.get(pk=jobs["held by a worker whose heartbeat is in 9999"])
    assert held.state == "available" and "WorkerLost" in held.errors[-1]["error"]
    assert not WorkerRow.objects.filter(heartbeat_at__year=9999).exists()
    worker.drain()
    ran = client.post("/jobs/run?limit=100", headers=headers)
    assert ran.status_code == 200, ran.content[:300]
    assert housekeeping.prune(now + timedelta(days=400)) > 0
    assert Job.objects.count() < len(jobs) / 2
    read_everything()
    assert not Job.objects.filter(state="executing").exists()
    assert not CANARY.exists()


# -- the same, in real processes ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_runworker_runscheduler_and_the_cli_as_processes_get_through_odd_rows(odd_jobs):
    plain = [Job.enqueue(ADD, [n, n]).pk for n in range(3)]
    for name, columns in ODD_SCHEDULES.items():
        schedule = Schedule.objects.create(name=name, cron="* * * * *", task=ADD, args=[1, 2])
        sql(f"UPDATE pgjobs_schedule SET {columns} WHERE id = %s", [schedule.pk])
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'"
        " WHERE next_fire_at > now()")  # fmt: skip
    burst = WorkerProcess("--burst", "--queues", "default")
    assert burst.wait(120) == 0, burst.output()
    ended = dict(Job.objects.values_list("pk", "state"))
    assert [ended[pk] for pk in plain] == ["completed"] * 3
    assert {name: ended[pk] for name, pk in odd_jobs.items()} == {
        name: state for name, (_, state, _) in ODD_JOBS.items()
    }
    scheduler = WorkerProcess("--once", command="runscheduler")
    assert scheduler.wait(120) == 0, scheduler.output()
    assert re.search(r"runscheduler --once: [1-9]\d* fired", scheduler.output()), scheduler.output()
    assert "task naming os.system @" not in scheduler.output()  # recorded, never fired
    listing = WorkerProcess("list", "--json", "--limit", "10000", command="pgjobs")
    assert listing.wait(120) == 0, listing.output()
    listed = json.loads(listing.output())["jobs"]
    assert {job["id"] for job in listed} == set(Job.objects.values_list("pk", flat=True))
    assert not CANARY.exists()


# -- hostile arguments on the command line ----------------------------------------------------

#: Command lines each refused with exit status 1 and a message (a traceback before).
REFUSED_COMMANDS = {
    "a job id of 5,000 digits": (("pgjobs", "show", "1" * 5000), "not a job id: '1111"),
    "retry by an id of 5,000 digits": (("pgjobs", "retry", "9" * 5000), "not a job id"),
    **{
        f"a token expiring in {days} days": (
            ("issue_api_token", "ci", "--queues", "*", "--expires-in-days", days),
            f"Error: argument --expires-in-days: {days!r} is not a number written in ASCII digits",
        )
        for days in ("nan", "inf", "1e400")
    },
    "a token expiring in -1 days": (
        ("issue_api_token", "ci", "--queues", "*", "--expires-in-days", "-1"),
        "--expires-in-days must be a number greater than 0",
    ),
    "a token expiring past 9999": (
        ("issue_api_token", "ci", "--queues", "*", "--expires-in-days", "3000000"),
        "--expires-in-days: 3e+06 days is past the year 9999",
    ),
    "a token named with a NUL": (
        ("issue_api_token", "c\x00i", "--queues", "*"), "name contains a NUL character"),
    "a token named with 1,000 characters": (
        ("issue_api_token", "x" * 1000, "--queues", "*"), "name must be 1 to 100 characters"),
    "a token of a connector with a NUL": (
        ("issue_api_token", "ci", "--queues", "*", "--connectors", "\x00"),
        r"connectors '\x00' is not a name (nor '*')"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED_COMMANDS)
def test_a_hostile_command_line_exits_1_saying_why_and_writes_nothing(case):
    """Each was a traceback (ValueError, OverflowError, DataError)."""
    args, message = REFUSED_COMMANDS[case]
    job = first_job()
    with pytest.raises(CommandError) as refused:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    assert refused.value.returncode == 1 and str(refused.value).startswith(message)
    assert not ApiToken.objects.exists() and list(Job.objects.all()) == [job]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "a\x00b"}, "name contains a NUL character"),
        ({"name": 5}, "name must be a string"),
        ({"queues": "default"}, "queues must be a list of names, not the string 'default'"),
        ({"queues": ["a b"]}, "queues 'a b' is not a name"),
        ({"queues": [None]}, "queues None is not a name"),
        ({"connectors": ["hook", "\x00"]}, r"connectors '\x00' is not a name"),
        ({"can_run": "yes"}, "can_run must be True or False, not 'yes'"),
        ({"expires_at": timezone.now().replace(tzinfo=None)}, "expires_at must be timezone-aware"),
        ({"expires_at": "2030-01-01"}, "expires_at must be a timezone-aware datetime"),
    ],
)
def test_issuing_a_token_refuses_what_no_row_holds_and_keeps_the_transaction(options, message):
    arguments = {"name": "ci", "queues": ["*"], **options}
    with transaction.atomic():
        with pytest.raises(InvalidOption, match=re.escape(message)):
            issue(arguments.pop("name"), arguments.pop("queues"), **arguments)
        assert not ApiToken.objects.exists()  # and the transaction still answers


# -- ids in the HTTP API's paths ----------------------------------------------------------

#: Path segments where a job id goes that name no job: each got Django's HTML 404 page
#: (4,301 digits are more than int() takes; the others matched no pattern).
NOT_IDS = {
    "4,301 digits": ("1" * 4301, "no job '1111"),
    "past bigint": ("9" * 20, "no job '99999999999999999999'"),
    "0": ("0", "no job '0'"),
    "-1": ("-1", "no job '-1'"),
    "letters": ("abc", "no job 'abc'"),
    "a fraction": ("1.5", "no job '1.5'"),
    "a NUL": ("%00", r"no job '\x00'"),
    "an Arabic-Indic digit": ("%D9%A1", "no job '\u0661'"),
    # Segments with a slash matched no pattern: Django's HTML page, still.
    "an id with a trailing slash": ("1/", "no job '1/'"),
    "an id and more": ("1/errors", "no job '1/errors'"),
    "an encoded slash": ("1%2F", "no job '1/'"),
}


@pytest.mark.parametrize("case", NOT_IDS)
def test_an_id_in_an_api_path_that_is_none_gets_the_apis_json_errors(client, case):
    segment, message = NOT_IDS[case]
    job = first_job()
    token = issue("ci", ["*"], can_run=True)[1]
    answer = client.get(f"/jobs/{segment}", headers={"Authorization": f"Bearer {token}"})
    body = answer.json()
    assert answer.status_code == 404 and set(body) == {"error", "message"}
    assert body["error"] == "not_found" and body["message"].startswith(message)
    # Authentication and the method are checked first, as on a real id.
    assert client.get(f"/jobs/{segment}").json()["error"] == "unauthorized"
    assert client.post(f"/jobs/{segment}").json()["error"] == "method_not_allowed"
    assert list(Job.objects.all()) == [job]


# -- notifications no code of ours sent -------------------------------------------------------

#: Payloads on the events channel that are no job event (anyone who may connect can
#: NOTIFY it): each made every job.wait(), async_wait() and listener fail.
NOT_EVENTS = [
    "", "not json", "[1, 2]", "null", "5", '"ids"', '{"ids": "123"}', '{"id": 1}',
    '{"ids": [1], "task": "t", "queue": "q", "state": ["completed"], "attempt": 1}',
    '{"ids": [true], "task": "t", "queue": "q", "state": "completed", "attempt": 1}',
    '{"ids": {"1": 1}, "task": "t", "queue": "q", "state": "completed", "attempt": 1}',
    '{"id": 1, "task": "t", "queue": "q", "state": "completed", "attempt": 1, "previous": 5}',
    "[" * 3900 + "]" * 3900,  # deeper than Python reads, within the 8,000 bytes of a payload
]  # fmt: skip


@pytest.mark.parametrize("payload", NOT_EVENTS, ids=range(len(NOT_EVENTS)))
def test_a_payload_that_is_no_event_is_skipped_and_logged(payload, caplog):
    assert Event.parse(payload) == []
    assert "pgjobs_events: not a job event, skipped" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_listener_hears_the_events_after_notifications_that_are_none(second_connection):
    with events.listen() as stream:
        for payload in NOT_EVENTS:
            second_connection.execute("SELECT pg_notify('pgjobs_events', %s)", [payload])
        job = Job.enqueue(ADD, [1, 2])
        heard = stream.first(lambda event: event.job_id == job.pk, timeout=10)
    assert heard is not None and heard.state == "available"


# -- a schedule of a task that is none --------------------------------------------------------


def test_a_schedule_of_no_task_logs_one_line_a_tick_and_no_traceback(caplog):
    """Schedule.objects.create() skips full_clean (documented): a task of "os.system" is
    saved, and each tick records UnknownTask. The scheduler says so once a tick, one
    line without a traceback, and nothing on the passes between ticks."""
    schedule = Schedule.objects.create(name="shell", cron="* * * * *", task="os.system",
                                       args=[f"touch {CANARY}"])  # fmt: skip
    Schedule.objects.create(name="fine", cron="* * * * *", task=ADD, args=[1, 2])
    scheduler = Scheduler()
    start = clocks.database_now().replace(second=0, microsecond=0)
    caplog.set_level("DEBUG", logger="django_pgjobs")
    for seconds in range(0, 3 * 60, 20):  # nine passes: the first plans, two ticks fire
        scheduler.run_once(start + timedelta(seconds=seconds + 1))
    problems = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR", "CRITICAL")]
    said = [r.getMessage() for r in problems]
    assert len(said) == 2 and all(
        re.match(r"schedule 'shell': tick \S+ \S+ enqueued nothing: unknown task 'os.system'", line)
        and "\n" not in line
        for line in said
    ), said
    assert all(r.name == "django_pgjobs.schedules" and not r.exc_info for r in problems)
    ticks = list(schedule.ticks.order_by("fire_at").values_list("error", "job_id"))
    assert [(error.split(":")[0], job) for error, job in ticks] == [("UnknownTask", None)] * 2
    assert Job.objects.filter(task=ADD).count() == 2 and not CANARY.exists()


@pytest.mark.parametrize("meta", ["5", "null", '"smtp_sent"', "true", '["smtp_sent", 1]'])
def test_a_completed_job_whose_meta_is_no_object_is_retried_with_the_others(meta):
    """A retry of a completed job drops its meta's smtp_sent with ``meta - 'smtp_sent'``,
    which PostgreSQL refuses on a scalar ("cannot delete from scalar"): one such row
    (written by SQL) failed the whole bulk retry (the admin's, pgjobs retry
    --include-completed) and every retry of it with a DataError. Its meta is left as it
    is, as rescue leaves it; a worker then ends the job clearly (test_hardening_rows)."""
    odd = insert_job(state="'completed'", finished_at="now()", attempt="1", meta=f"'{meta}'")
    plain = insert_job(state="'completed'", finished_at="now()", attempt="1",
                       meta="""'{"smtp_sent": {"a": 1}, "kept": 1}'""")  # fmt: skip
    assert transitions.retry_many(Job.objects.all(), include_completed=True) == 2
    rows = dict(sql("SELECT id, meta::text FROM pgjobs_job WHERE state = 'available'"))
    assert rows == {odd: sql(f"SELECT '{meta}'::jsonb::text")[0][0], plain: '{"kept": 1}'}
    Job.objects.all().delete()
    odd = insert_job(state="'completed'", finished_at="now()", attempt="1", meta=f"'{meta}'")
    with transaction.atomic():
        assert (
            transitions.retry(Job.objects.get(pk=odd), include_completed=True).state == "available"
        )
    insert_job(state="'completed'", finished_at="now()", attempt="1", meta=f"'{meta}'")
    out = io.StringIO()
    call_command("pgjobs", "retry", "--yes", "--state", "completed", "--include-completed",
                 stdout=out, stderr=out)  # fmt: skip
    assert "1 job(s) will run again" in out.getvalue(), out.getvalue()
    assert set(Job.objects.values_list("state", flat=True)) == {"available"}
