"""Unique jobs: one job per key, enforced by the database."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from django_pgjobs import Job, transitions
from django_pgjobs.exceptions import InvalidArguments, PgJobsError, UniqueKeyConflict
from django_pgjobs.states import JobState
from tests.conftest import on_another_connection
from tests.tasks_for_tests import (
    once_an_hour,
    once_an_hour_as,
    unique_export,
    unique_report,
    unique_tagged,
)

pytestmark = pytest.mark.django_db


def test_unique_tasks_derive_their_key_from_the_arguments():
    first = unique_report.enqueue(7)
    again = unique_report.enqueue(7)
    other = unique_report.enqueue(8)
    assert again.pk == first.pk and again.is_duplicate
    assert other.pk != first.pk
    assert Job.objects.count() == 2


def _one_job(*enqueues) -> Job:
    """The job of the first of ``enqueues``, after checking each later one returned it."""
    first = enqueues[0]()
    for enqueue in enqueues[1:]:
        again = enqueue()
        assert (again.pk, again.is_duplicate) == (first.pk, True), (again.args, again.kwargs)
    assert Job.objects.filter(task=first.task).count() == 1
    return first


def test_an_argument_passed_by_position_or_by_name_is_one_job():
    """The key was of the arguments as written: enqueue(7) and enqueue(report_id=7),
    one call of the function, were two keys and two jobs."""
    _one_job(lambda: unique_report.enqueue(7), lambda: unique_report.enqueue(report_id=7))
    _one_job(lambda: once_an_hour.enqueue(name="daily"), lambda: once_an_hour.enqueue("daily"))


def test_a_default_left_out_or_given_is_one_job():
    job = _one_job(
        lambda: unique_export.enqueue(7),
        lambda: unique_export.enqueue(7, "pdf"),
        lambda: unique_export.enqueue(7, fmt="pdf"),
        lambda: unique_export.enqueue(report_id=7, fmt="pdf", pages=None),
        lambda: unique_export.enqueue(pages=None, report_id=7),
    )
    assert (job.args, job.kwargs) == ([7], {})  # the job keeps the arguments as given
    _one_job(
        lambda: once_an_hour_as.enqueue("daily"), lambda: once_an_hour_as.enqueue("daily", "pdf")
    )


def test_other_values_are_other_jobs_and_1_is_not_1_0():
    """The same arguments are the same JSON, parameter by parameter: 1 and 1.0 are
    equal in Python but not the same JSON, nor "7" and 7."""
    calls = [
        lambda: unique_export.enqueue(7),
        lambda: unique_export.enqueue(7.0),
        lambda: unique_export.enqueue("7"),
        lambda: unique_export.enqueue(7, "csv"),
        lambda: unique_export.enqueue(7, pages=3),
        lambda: unique_export.enqueue(8),
    ]
    jobs = [call() for call in calls]
    assert len({job.pk for job in jobs}) == len(calls)
    assert not any(job.is_duplicate for job in jobs)


def test_variadic_arguments_are_keyed_too_their_names_in_any_order():
    job = _one_job(
        lambda: unique_tagged.enqueue(1, 2, 3, colour="red", size="s"),
        lambda: unique_tagged.enqueue(1, 2, 3, size="s", colour="red"),
    )
    others = [
        unique_tagged.enqueue(1, 2, 3),
        unique_tagged.enqueue(1, 2, colour="red", size="s"),
        unique_tagged.enqueue(1, 3, 2, colour="red", size="s"),
        unique_tagged.enqueue(1, 2, 3, colour="red", size="m"),
        # A positional-only name as a keyword goes to **labels, not to ``first``.
        unique_tagged.enqueue(1, 2, 3, colour="red", size="s", first="x"),
    ]
    assert len({job.pk, *(other.pk for other in others)}) == 6


def test_a_default_no_json_holds_keys_calls_that_leave_it_out_alike():
    first = _one_job(lambda: unique_tagged.enqueue(1), lambda: unique_tagged.enqueue(1))
    assert unique_tagged.enqueue(1, since=None).pk != first.pk


def test_a_parameter_the_worker_passes_in_is_keyed_as_left_out():
    """``results`` is the worker's to pass (pass_results=True): no enqueue gives it."""
    name = "tests.tasks_for_tests.unique_total"
    _one_job(
        lambda: Job.enqueue(name, pass_results=True),
        lambda: Job.enqueue(name, kwargs={"scale": 1}, pass_results=True),
    )


def test_a_parameter_with_a_default_added_to_a_task_keeps_the_keys_of_calls_without_it():
    """Across a deploy that adds ``fmt="pdf"`` to a unique task (or changes its
    default), a job enqueued by the old code and one by the new, stored alike as
    ``[7]`` and run alike, keep one key: an argument equal to its default counts as
    left out, not the default as given."""
    from django_pgjobs.tasks import Task

    def before(report_id): ...
    def after(report_id, fmt="pdf"): ...
    def changed(report_id, fmt="csv"): ...

    keys = {
        Task(function, "reports.export", unique=True).unique_key(args, kwargs)
        for function, args, kwargs in [
            (before, [7], {}),
            (after, [7], {}),
            (after, [7, "pdf"], {}),
            (after, [], {"report_id": 7, "fmt": "pdf"}),
            (changed, [7], {}),
        ]
    }
    assert len(keys) == 1
    assert Task(changed, "reports.export", unique=True).unique_key([7, "pdf"], {}) not in keys


def test_a_batch_keys_each_job_by_its_parameters():
    name = "tests.tasks_for_tests.unique_export"
    jobs = Job.enqueue_many(
        [
            {"task": name, "args": [1]},
            {"task": name, "kwargs": {"report_id": 1, "fmt": "pdf"}},
            {"task": name, "args": [1, "csv"]},
        ]
    )
    assert jobs[1].pk == jobs[0].pk and jobs[1].is_duplicate
    assert jobs[2].pk != jobs[0].pk and Job.objects.count() == 2


@pytest.mark.parametrize(
    "args, kwargs, said",
    [
        ([7, "pdf", 3], {}, "args: unique_export() takes at most 2 positional argument(s), got 3"),
        ([7], {"report_id": 7}, "kwargs['report_id']: 'report_id' is given in args as well"),
        ([7], {"format": "pdf"}, "kwargs['format']: unique_export() has no parameter 'format'"),
        ([], {"fmt": "pdf"}, "args: missing argument 'report_id' of unique_export()"),
    ],
)
def test_arguments_that_do_not_bind_are_refused_as_for_any_task(args, kwargs, said):
    with pytest.raises(InvalidArguments) as refused:
        Job.enqueue("tests.tasks_for_tests.unique_export", args=args, kwargs=kwargs)
    assert str(refused.value) == said
    assert not Job.objects.exists()


def test_the_parameters_are_read_once_per_task_not_per_enqueue(monkeypatch):
    import inspect

    unique_export.enqueue(1)

    def signature(*args, **kwargs):
        raise AssertionError("inspect.signature() per enqueue")

    monkeypatch.setattr(inspect, "signature", signature)
    assert unique_export.enqueue(fmt="pdf", report_id=1).is_duplicate


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
