"""Two sessions doing conflicting things at once, against the real PostgreSQL: the
interleaving is forced (one session holds what the other needs, and the test waits,
with a deadline, until the other is seen waiting on it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import connection, connections, transaction

from django_pgjobs import Job, db, enqueue, loaded, transitions
from django_pgjobs.models import JobDependency
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from django_pgjobs.workers import CONTROL_CHANNEL
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "testproject.demo.tasks.add"


class Session(threading.Thread):
    """``work`` in a transaction of its own Django connection, on a thread; it
    commits (or rolls back) when told, after ``work`` returned."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.pid: int | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.end = threading.Event()
        self.rollback = False

    def run(self) -> None:
        try:
            with transaction.atomic():
                self.pid = connection.connection.info.backend_pid
                try:
                    self.result = self.work()
                finally:
                    self.done.set()
                self.end.wait(30)
                if self.rollback:
                    transaction.set_rollback(True)
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()
            connections.close_all()

    def finish(self, rollback: bool = False) -> Any:
        self.rollback = rollback
        self.end.set()
        self.join(30)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def start(work: Callable[[], Any]) -> Session:
    session = Session(work)
    session.start()
    wait_until(lambda: session.pid is not None)
    return session


def waiting_on_a_lock(session: Session) -> bool:
    # On a connection of its own, in autocommit: a transaction reads pg_stat_activity once.
    if session.pid is None:
        return False
    with psycopg.connect(**db.connection_params(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [session.pid]
        ).fetchone()
    return bool(row and row[0])


def blocked(session: Session) -> bool:
    """Whether ``session`` is still at work and waits on a lock another holds."""
    return not session.done.is_set() and waiting_on_a_lock(session)


# -- Unique and debounce keys -----------------------------------------------------------


def unique(key: str, n: int = 1) -> Callable[[], Job]:
    return lambda: Job.enqueue(ADD, args=[n, n], unique_key=key)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_unique_key_enqueued_in_two_open_transactions_is_one_job(outcome):
    first = start(unique("k"))
    first.done.wait(10)
    second = start(unique("k", 2))
    wait_until(lambda: blocked(second))  # on the first's uncommitted index entry
    held = first.finish(rollback=outcome == "rollback")
    got = second.finish()
    assert not held.is_duplicate
    if outcome == "commit":
        assert got.is_duplicate and got.pk == held.pk
    else:
        assert not got.is_duplicate and got.pk != held.pk
    assert list(Job.objects.values_list("pk", flat=True)) == [got.pk]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_unique_for_key_enqueued_in_two_open_transactions_is_one_job(outcome):
    from tests.tasks_for_tests import once_an_hour

    first = start(lambda: once_an_hour.enqueue("r"))
    first.done.wait(10)
    second = start(lambda: once_an_hour.enqueue("r"))
    wait_until(lambda: blocked(second))  # on the key's advisory lock
    held = first.finish(rollback=outcome == "rollback")
    got = second.finish()
    assert got.is_duplicate == (outcome == "commit")
    assert (got.pk == held.pk) == (outcome == "commit")
    assert Job.objects.count() == 1


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_debounce_key_called_in_two_open_transactions_leaves_one_pending_job(outcome):
    def call(n: int) -> Callable[[], Job]:
        return lambda: Job.enqueue(ADD, args=[n, n], debounce_key="d", debounce=5)

    first = start(call(1))
    first.done.wait(10)
    second = start(call(2))
    wait_until(lambda: blocked(second))  # on the key's advisory lock
    held = first.finish(rollback=outcome == "rollback")
    got = second.finish()
    assert got.is_duplicate == (outcome == "commit")
    assert (got.pk == held.pk) == (outcome == "commit")
    (pending,) = Job.objects.all()
    assert pending.pk == got.pk and pending.args == [2, 2]  # the last call's arguments


def test_the_second_enqueuer_of_a_key_keeps_its_transaction_usable():
    first = start(unique("k"))
    first.done.wait(10)

    def enqueue_and_carry_on() -> tuple[Job, int]:
        job = Job.enqueue(ADD, args=[2, 2], unique_key="k")
        return job, Job.enqueue(ADD, args=[3, 3]).pk  # the transaction still works

    second = start(enqueue_and_carry_on)
    wait_until(lambda: blocked(second))
    held = first.finish()
    got, other = second.finish()
    assert got.is_duplicate and got.pk == held.pk
    assert Job.objects.filter(pk=other).exists()


@pytest.mark.parametrize("keyed", ["unique_key", "debounce_key"])
def test_two_batches_of_the_same_keys_in_opposite_orders_do_not_deadlock(keyed, monkeypatch):
    def batch(keys: list[str]) -> Callable[[], list[Job]]:
        extra = {"debounce": 5} if keyed == "debounce_key" else {}
        return lambda: Job.enqueue_many(
            [{"task": ADD, "args": [1, 1], keyed: key, **extra} for key in keys]
        )

    # Each batch takes its first key, then goes on once the other took its first or
    # waits on a lock: unless both take their keys in one order, each then holds what
    # the other waits for.
    name = "_insert_unique" if keyed == "unique_key" else "_insert_debounced"
    insert = getattr(enqueue, name)
    keys = [f"k{n}" for n in range(6)]
    forwards, backwards = Session(batch(keys)), Session(batch(keys[::-1]))
    took_first = {forwards: threading.Event(), backwards: threading.Event()}

    def then_wait_for_the_other(job: Job, *args: Any) -> None:
        insert(job, *args)
        me = threading.current_thread()
        if took_first[me].is_set():
            return
        took_first[me].set()
        other = backwards if me is forwards else forwards
        wait_until(lambda: took_first[other].is_set() or waiting_on_a_lock(other))

    monkeypatch.setattr(enqueue, name, then_wait_for_the_other)
    for session in (forwards, backwards):
        session.start()
        wait_until(lambda s=session: s.pid is not None)
    wait_until(lambda: forwards.done.is_set() or backwards.done.is_set())
    for session in (forwards, backwards):
        if session.done.is_set():
            assert session.error is None, session.error
    one, other = forwards.finish(), backwards.finish()
    assert {job.pk for job in one} == {job.pk for job in other}
    assert Job.objects.count() == len(keys)
    got = [job.meta.get("debounce", {}).get("key", job.unique_key) for job in other]
    assert got == keys[::-1]


def test_a_holder_that_finishes_before_the_loser_reads_it_leaves_the_key_free(monkeypatch):
    """The insert of a key lost to a job that then finished before the loser looked
    for it (a worker was quick): the loser enqueues, no IntegrityError."""
    holder = Job.enqueue(ADD, args=[1, 1], unique_key="k")
    looked = loaded.holder

    def finished_meanwhile(queryset: Any) -> Any:
        Job.objects.filter(pk=holder.pk).update(state=JobState.CANCELLED)
        return looked(queryset)

    monkeypatch.setattr(loaded, "holder", finished_meanwhile)
    with transaction.atomic():
        job = Job.enqueue(ADD, args=[2, 2], unique_key="k")
    assert not job.is_duplicate and job.pk != holder.pk
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


# -- Cancel racing a claim and an outcome --------------------------------------------------


def claim_params(now: Any) -> dict[str, Any]:
    return {
        "queue": "default",
        "limit": 1,
        "worker_id": None,
        "states": ["available"],
        "most": 2_000_000,
        "inline": 8192,
        "now": now,
    }


@pytest.fixture
def claimer(transactional_db: None) -> Any:
    """A worker's connection, in a transaction of its own (not autocommit)."""
    conn = psycopg.connect(**db.connection_params())
    yield conn
    conn.close()


def control_messages(listener: psycopg.Connection) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=0.3)]


@pytest.mark.parametrize("how", ["cancel", "cancel_many"])
def test_a_cancel_that_waited_for_a_claim_tells_the_worker(how, claimer, second_connection):
    """The worker claimed the job while the cancel looked at it: the job is cancelled
    and its worker told, so that it does not start it (or stops it)."""
    second_connection.execute(f"LISTEN {CONTROL_CHANNEL}")
    job = Job.enqueue(ADD, args=[1, 1])
    now = claimer.execute("SELECT now()").fetchone()[0]
    claimed = claimer.execute(db.statement("claim"), claim_params(now)).fetchall()
    assert [row[0] for row in claimed] == [job.pk]  # not committed yet: the row is locked

    def cancel() -> Any:
        if how == "cancel":
            return transitions.cancel(Job.objects.get(pk=job.pk)).state
        return transitions.cancel_many(Job.objects.filter(pk=job.pk))

    session = start(cancel)
    wait_until(lambda: blocked(session))  # on the claim's row lock
    claimer.commit()
    session.done.wait(10)
    session.finish()
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED
    assert f"cancel:{job.pk}" in control_messages(second_connection)


@pytest.mark.parametrize("first", ["cancel", "outcome"])
def test_a_cancel_and_an_outcome_at_once_end_in_the_first_one(first):
    job = Job.enqueue(ADD, args=[1, 1])
    (claimed,) = Worker(concurrency=1).claim(1)

    def cancel() -> Job:
        return transitions.cancel(Job.objects.get(pk=job.pk))

    def complete() -> bool:
        return transitions.complete(claimed, 2)

    holder = start(cancel if first == "cancel" else complete)
    holder.done.wait(10)
    other = start(complete if first == "cancel" else cancel)
    wait_until(lambda: blocked(other))
    holder.finish()
    answer = other.finish()
    stored = Job.objects.get(pk=job.pk)
    if first == "cancel":
        assert answer is False  # the lease was taken: the outcome is refused
        assert stored.state == JobState.CANCELLED and stored.result is None
    else:
        assert answer.state == JobState.COMPLETED  # a finished job is left as it is
        assert stored.state == JobState.COMPLETED and stored.result == 2


# -- Dependencies: a parent finishing while a child is enqueued ---------------------------


@pytest.mark.parametrize("first", ["parent", "child"])
@pytest.mark.parametrize("ending", ["completed", "cancelled"])
def test_a_child_enqueued_while_its_parent_finishes_neither_waits_for_ever_nor_runs_early(
    first, ending
):
    parent = Job.enqueue(ADD, args=[1, 1])
    (claimed,) = Worker(concurrency=1).claim(1)

    def finish_parent() -> Any:
        if ending == "completed":
            return transitions.complete(claimed, 2)
        return transitions.cancel(Job.objects.get(pk=parent.pk))

    def enqueue_child() -> Job:
        return Job.enqueue(ADD, args=[2, 2], depends_on=[parent.pk])

    holder = start(finish_parent if first == "parent" else enqueue_child)
    holder.done.wait(10)
    other = start(enqueue_child if first == "parent" else finish_parent)
    wait_until(lambda: blocked(other))
    holder.finish()
    other.finish()
    child = Job.objects.exclude(pk=parent.pk).get()
    assert Job.objects.get(pk=parent.pk).state == ending
    if ending == "completed":
        assert child.state == JobState.AVAILABLE and child.pending_dependencies == 0
    else:
        assert child.state == JobState.CANCELLED


# -- Queues: pause racing claims, a concurrency limit claimed at once ----------------------


def test_a_worker_that_has_not_heard_of_the_pause_yet_claims_nothing(monkeypatch):
    """A worker keeps its queues' settings until a notification says they changed:
    between the pause's commit and its notification reaching the worker, a claim
    started jobs of the paused queue."""
    from django_pgjobs import queues

    Job.enqueue(ADD, args=[1, 1])
    worker = Worker(concurrency=1, queues=["default"])
    monkeypatch.setattr(worker._claimer, "_queue_configs", lambda: {"default": {"paused": False}})
    queues.set_paused(["default"], True)
    assert worker.claim(1) == []
    queues.set_paused(["default"], False)
    assert len(worker.claim(1)) == 1


@pytest.mark.parametrize("limit", [{"concurrency": 2}, {"blocking": True}])
def test_two_workers_claiming_a_limited_queue_at_once_start_no_more_than_it_allows(limit):
    from django_pgjobs.models import Queue

    Queue.objects.update_or_create(name="default", defaults=limit)
    Job.enqueue_many([{"task": ADD, "args": [n, n]} for n in range(5)])
    allowed = limit.get("concurrency", 1)
    # The first claim's transaction stays open: the second waits on the queue's row.
    first = start(lambda: Worker(concurrency=5, queues=["default"]).claim(5))
    first.done.wait(10)
    second = start(lambda: Worker(concurrency=5, queues=["default"]).claim(5))
    wait_until(lambda: blocked(second))
    assert len(first.finish()) == allowed
    assert second.finish() == []
    assert Job.objects.filter(state=JobState.EXECUTING).count() == allowed


# -- Schedules: run now racing the scheduler's tick; two schedulers at once ---------------


def due_schedule(**options: Any) -> Any:
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import ScheduleFactory

    tick = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=2)
    # Fired at ``now`` half a minute after its tick: one tick due, the next after now.
    now = tick + timedelta(seconds=30)
    return ScheduleFactory(next_fire_at=tick, catch_up="all", **options), tick, now


def fire(now: Any) -> list[Any]:
    from django_pgjobs.scheduler import Scheduler

    return Scheduler(routines=[]).fire_due(now)


@pytest.mark.parametrize("first", ["run_now", "tick"])
def test_run_now_and_the_schedulers_tick_at_once_follow_the_overlap_policy(first):
    from django_pgjobs.schedules import NotRun, run_now

    schedule, tick, now = due_schedule(overlap="skip")
    if first == "run_now":
        holder = start(lambda: run_now(schedule))
        holder.done.wait(10)
        assert fire(now) == []  # the schedule's row is held: skipped, not waited for
        extra = holder.finish()
        (fired,) = fire(now)  # its next round: the tick, skipped by the policy
        assert fired.fire_at == tick and fired.skipped.startswith(f"skipped: job {extra.pk}")
        assert Job.objects.count() == 1
    else:
        holder = start(lambda: fire(now))
        holder.done.wait(10)
        other = start(lambda: run_now(schedule))
        wait_until(lambda: blocked(other))  # run now waits for the tick
        (fired,) = holder.finish()
        with pytest.raises(NotRun, match=f"not run: job {fired.job_id} of this schedule"):
            other.finish()
        assert list(Job.objects.values_list("pk", flat=True)) == [fired.job_id]


def test_two_schedulers_at_once_fire_each_tick_once():
    from django_pgjobs.models import ScheduleTick

    schedule, tick, now = due_schedule()
    one = start(lambda: fire(now))
    one.done.wait(10)
    assert fire(now) == []  # the other skips the row the first holds
    (fired,) = one.finish()
    assert fire(now) == []  # and then finds it planned past now
    assert fired.fire_at == tick and ScheduleTick.objects.filter(schedule=schedule).count() == 1
    assert Job.objects.count() == 1


def test_a_parent_claimed_while_it_is_deleted_keeps_its_child(claimer):
    """delete_many leaves executing jobs alone, and cancels the children of those it
    deletes: a parent a worker claimed while it was being deleted was kept, and run,
    but its child was cancelled as if the parent were gone."""
    parent = Job.enqueue(ADD, args=[1, 1])
    child = Job.enqueue(ADD, args=[2, 2], depends_on=[parent.pk])
    now = claimer.execute("SELECT now()").fetchone()[0]
    assert [r[0] for r in claimer.execute(db.statement("claim"), claim_params(now))] == [parent.pk]
    deleting = start(lambda: transitions.delete_many(Job.objects.filter(pk=parent.pk)))
    wait_until(lambda: blocked(deleting))  # on the claim's row lock
    claimer.commit()
    assert deleting.finish() == 0
    assert Job.objects.get(pk=parent.pk).state == JobState.EXECUTING
    kept = Job.objects.get(pk=child.pk)
    assert kept.state == JobState.WAITING and kept.pending_dependencies == 1
    assert JobDependency.objects.filter(job_id=child.pk, depends_on_id=parent.pk).exists()
