"""Unique jobs: one job per key, enforced by the database."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from django_pgjobs import Job, transitions
from django_pgjobs.exceptions import PgJobsError, UniqueKeyConflict
from django_pgjobs.states import JobState
from tests.conftest import on_another_connection
from tests.tasks_for_tests import once_an_hour, unique_report

pytestmark = pytest.mark.django_db


def test_unique_tasks_derive_their_key_from_the_arguments():
    first = unique_report.enqueue(7)
    again = unique_report.enqueue(7)
    other = unique_report.enqueue(8)
    assert again.pk == first.pk and again.is_duplicate
    assert other.pk != first.pk
    assert Job.objects.count() == 2


def test_the_key_is_free_again_once_the_job_finished(worker):
    first = unique_report.enqueue(7)
    worker.drain()
    assert Job.objects.get(pk=first.pk).state == JobState.COMPLETED
    assert unique_report.enqueue(7).pk != first.pk


def test_unique_for_a_period_holds_the_key_whatever_the_state(worker):
    first = once_an_hour.enqueue("daily-report")
    worker.drain()
    assert once_an_hour.enqueue("daily-report").pk == first.pk
    Job.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert once_an_hour.enqueue("daily-report").pk != first.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("enqueue", [unique_report.enqueue, once_an_hour.enqueue])
def test_twenty_threads_enqueueing_one_key_create_exactly_one_job(enqueue):
    barrier = threading.Barrier(20)
    ids: list[int] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            barrier.wait(10)
            with transaction.atomic():
                ids.append(enqueue("same").pk)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(ids) == 20 and len(set(ids)) == 1
    assert Job.objects.count() == 1


def test_a_unique_key_is_unique_within_its_queue():
    first = Job.enqueue("testproject.demo.tasks.add", args=[1, 1], unique_key="k-per-queue")
    other = Job.enqueue(
        "testproject.demo.tasks.add", args=[2, 2], unique_key="k-per-queue", queue="mail"
    )
    again = Job.enqueue("testproject.demo.tasks.add", args=[3, 3], unique_key="k-per-queue")
    assert other.pk != first.pk and not other.is_duplicate
    assert again.pk == first.pk and again.is_duplicate


def _enqueued_elsewhere(key: str) -> int:
    """A job of ``key``, enqueued and committed on another connection (a thread's)."""
    return on_another_connection(
        lambda: Job.enqueue("testproject.demo.tasks.add", [1, 1], unique_key=key).pk
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_key_whose_holder_committed_after_the_snapshot_is_a_clear_error(isolation):
    """Under REPEATABLE READ (or SERIALIZABLE) the holder committed after the caller's
    snapshot can't be read: the unique index refused the insert and the caller got
    the raw IntegrityError, naming an index. Ours names the key and says to retry the
    transaction; it is still an IntegrityError, and the transaction stays usable."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        assert not Job.objects.exists()  # the snapshot is taken
        holder = _enqueued_elsewhere("report-1")
        with pytest.raises(UniqueKeyConflict) as refused:
            Job.enqueue("testproject.demo.tasks.add", [2, 2], unique_key="report-1")
        error = refused.value
        assert isinstance(error, IntegrityError) and isinstance(error, PgJobsError)
        assert (error.queue, error.key) == ("default", "report-1")
        assert "unique_key 'report-1' of queue 'default'" in str(error)
        assert "retry the transaction" in str(error)
        assert not Job.objects.exists()  # usable, its snapshot still
    again = Job.enqueue("testproject.demo.tasks.add", [2, 2], unique_key="report-1")
    assert (again.pk, again.is_duplicate) == (holder, True)  # retried: the holder


def _enqueued_and_cancelled_elsewhere(name: str) -> int:
    """A job of ``once_an_hour(name)``, enqueued then cancelled (finished) on another
    connection (a thread's), each committed."""

    def enqueue_and_cancel() -> int:
        job = once_an_hour.enqueue(name)
        transitions.cancel(job)
        return job.pk

    return on_another_connection(enqueue_and_cancel)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_unique_for_holds_against_a_finished_holder_committed_after_the_snapshot(isolation):
    """unique_for's check of the jobs within its window reads the caller's snapshot:
    a holder committed after it, and finished since (the unique index no longer
    holds its key), was out of sight, and a second job was made within the window,
    silently. The enqueue raises UniqueKeyConflict instead, writing nothing, and the
    transaction retried returns the holder."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        assert not Job.objects.exists()  # the snapshot is taken
        holder = _enqueued_and_cancelled_elsewhere("daily")
        with pytest.raises(UniqueKeyConflict) as refused:
            once_an_hour.enqueue("daily")
        assert "retry the transaction" in str(refused.value)
        assert not Job.objects.exists()  # usable, its snapshot still
    assert list(Job.objects.values_list("pk", flat=True)) == [holder]
    again = once_an_hour.enqueue("daily")
    assert (again.pk, again.is_duplicate) == (holder, True)  # retried: the holder


def _keyed(state: str, key: str | None, queue: str = "reports") -> Job:
    from tests.factories import JobFactory

    traits = {} if state == JobState.AVAILABLE else {state: True}
    return JobFactory(queue=queue, unique_key=key, **traits)


def test_a_bulk_retry_retries_the_newest_job_of_each_free_key_and_leaves_held_ones():
    """Two discarded jobs of one key, or one whose key an active job holds, made the
    whole UPDATE fail on the unique index: nothing was retried."""
    older, newer = _keyed("discarded", "k1"), _keyed("discarded", "k1")
    held, holder = _keyed("discarded", "k2"), _keyed("scheduled", "k2")
    free = _keyed("discarded", None)
    elsewhere = _keyed("discarded", "k2", queue="mail")  # keys are per queue
    selection = Job.objects.filter(state=JobState.DISCARDED)
    with transaction.atomic():
        assert sorted(transitions.key_held(selection).values_list("pk", flat=True)) == sorted(
            [older.pk, held.pk]
        )
        assert transitions.retry_many(selection) == 3
        assert sorted(transitions.key_held(selection).values_list("pk", flat=True)) == sorted(
            [older.pk, held.pk]
        )
        assert Job.objects.count() == 6  # the caller's transaction is still usable
    states = dict(Job.objects.values_list("pk", "state"))
    assert [states[j.pk] for j in (older, newer, held, holder, free, elsewhere)] == [
        JobState.DISCARDED, JobState.AVAILABLE, JobState.DISCARDED, JobState.SCHEDULED,
        JobState.AVAILABLE, JobState.AVAILABLE,
    ]  # fmt: skip


def test_a_retry_of_a_job_whose_key_is_held_is_a_clear_error_that_writes_nothing():
    from django_pgjobs.exceptions import UniqueKeyHeld
    from django_pgjobs.states import InvalidTransition

    job, holder = _keyed("discarded", "k"), _keyed("available", "k")
    with transaction.atomic():
        with pytest.raises(UniqueKeyHeld) as raised:
            job.retry()
        assert Job.objects.count() == 2  # the caller's transaction is still usable
    assert isinstance(raised.value, InvalidTransition)
    assert (raised.value.job_id, raised.value.holder_id, raised.value.key) == (
        job.pk, holder.pk, "k",
    )  # fmt: skip
    assert str(raised.value) == (
        f"job {job.pk}: can't retry it: its unique_key 'k' of queue 'reports' is held by "
        f"active job {holder.pk}; nothing changed (cancel that job, or retry this one once "
        "it has finished)"
    )
    assert Job.objects.get(pk=job.pk).state == JobState.DISCARDED
    holder.cancel()  # the key is free again
    assert job.retry().state == JobState.AVAILABLE


def _held_while_retried(key: str, retry) -> tuple[int, object]:
    """``retry()``'s outcome (its value or its error) and the id of a job of ``key``
    that another connection inserts before it and commits while it waits on the
    unique index: the holder was not there for the UPDATE's look, only for its write."""
    inserted, outcome = threading.Event(), []

    def hold() -> int:
        with transaction.atomic():
            pk = Job.enqueue("testproject.demo.tasks.add", [1, 1], unique_key=key).pk
            inserted.set()
            deadline = time.monotonic() + 30
            with connection.cursor() as cursor:
                while time.monotonic() < deadline:  # the retry waits on this transaction
                    cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND datname = current_database()"
                    )
                    if cursor.fetchone()[0]:
                        break
                    time.sleep(0.01)
        return pk

    def retried() -> None:
        inserted.wait(30)
        try:
            outcome.append(retry())
        except Exception as error:  # the outcome is what the test checks
            outcome.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=retried)
    thread.start()
    holder = on_another_connection(hold)
    thread.join(30)
    assert outcome, "the retry did not finish"
    return holder, outcome[0]


@pytest.mark.django_db(transaction=True)
def test_a_bulk_retry_leaves_a_job_whose_key_was_taken_while_it_ran():
    """The holder committed after the UPDATE's look: its write failed on the unique
    index. The UPDATE runs again, in a savepoint of its own, and sees the holder."""
    from tests.factories import JobFactory

    held = JobFactory(queue="default", unique_key="race", discarded=True)
    free = JobFactory(queue="default", discarded=True)
    selection = Job.objects.filter(state=JobState.DISCARDED)
    _, retried = _held_while_retried("race", lambda: transitions.retry_many(selection))
    assert retried == 1
    states = dict(Job.objects.values_list("pk", "state"))
    assert (states[held.pk], states[free.pk]) == (JobState.DISCARDED, JobState.AVAILABLE)


@pytest.mark.django_db(transaction=True)
def test_a_retry_of_a_job_whose_key_was_taken_while_it_ran_names_the_holder():
    from django_pgjobs.exceptions import UniqueKeyHeld
    from tests.factories import JobFactory

    job = JobFactory(queue="default", unique_key="race", discarded=True)
    holder, refused = _held_while_retried("race", job.retry)
    assert isinstance(refused, UniqueKeyHeld), refused
    assert refused.holder_id == holder
    assert Job.objects.get(pk=job.pk).state == JobState.DISCARDED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_bulk_retry_of_a_key_held_after_the_snapshot_is_a_clear_error(isolation):
    """Under REPEATABLE READ (or SERIALIZABLE) a holder committed after the caller's
    snapshot stays out of every try's sight: each UPDATE failed on the unique index
    and the raw IntegrityError reached the caller. Ours names the key and says to
    retry the transaction; nothing is written and the transaction stays usable."""
    from tests.factories import JobFactory

    finished = JobFactory(queue="default", unique_key="report-1, (x)", discarded=True)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        selection = Job.objects.filter(state=JobState.DISCARDED)
        assert list(selection.values_list("pk", flat=True)) == [finished.pk]  # snapshot
        holder = _enqueued_elsewhere("report-1, (x)")
        with pytest.raises(UniqueKeyConflict) as refused:
            transitions.retry_many(selection)
        error = refused.value
        assert isinstance(error, IntegrityError) and isinstance(error, PgJobsError)
        assert (error.queue, error.key) == ("default", "report-1, (x)")
        assert error.isolation == isolation.lower()
        assert "retry the transaction" in str(error)
        assert Job.objects.get(pk=finished.pk).state == JobState.DISCARDED  # usable
    states = dict(Job.objects.values_list("pk", "state"))
    assert (states[finished.pk], states[holder]) == (JobState.DISCARDED, JobState.AVAILABLE)
