"""Running jobs in-process: outcomes, retries with backoff, claim order and queue rules."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from django_pgjobs import Job
from django_pgjobs.models import Queue
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from testproject.demo.models import Run
from testproject.demo.tasks import add, always_fails, async_sleep, record
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db


def test_a_completed_job_keeps_its_return_value(worker):
    job = add.enqueue(2, 3)
    assert worker.drain() == {"completed": 1}
    job.refresh_from_db()
    assert job.state == JobState.COMPLETED
    assert job.result == 5
    assert job.attempt == 1
    assert job.finished_at is not None and job.attempted_at <= job.finished_at


def test_async_tasks_run_on_an_event_loop(worker):
    job = async_sleep.enqueue(0.01)
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, 0.01)


def test_async_task_over_its_timeout_fails_the_attempt(worker):
    job = async_sleep.using(timeout=0.05, max_attempts=1).enqueue(5)
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.DISCARDED
    assert "timeout of 0.05s" in job.errors[0]["error"]


def test_retries_follow_the_backoff_and_end_discarded_with_every_error_kept(worker):
    # always_fails: max_attempts=2, fixed backoff of 0.5s, no jitter.
    job = always_fails.using(max_attempts=4).enqueue("boom")
    now = timezone.now()
    for attempt in (1, 2, 3):
        assert worker.drain(now=now) == {"retryable": 1}
        job.refresh_from_db()
        assert job.state == JobState.RETRYABLE and job.attempt == attempt
        assert job.run_at - job.attempted_at == timedelta(seconds=0.5)
        assert worker.drain(now=job.run_at - timedelta(milliseconds=1)) == {}, "ran too early"
        now = job.run_at
    assert worker.drain(now=now) == {"discarded": 1}
    job.refresh_from_db()
    assert job.state == JobState.DISCARDED
    assert [e["attempt"] for e in job.errors] == [1, 2, 3, 4]
    assert all(e["error"] == "ValueError: boom" for e in job.errors)
    assert all("raise ValueError(message)" in e["traceback"] for e in job.errors)


def test_a_stored_traceback_starts_at_the_task_not_at_pgjobs_plumbing(worker):
    job = always_fails.enqueue("boom")
    worker.drain()
    job.refresh_from_db()
    frames = job.errors[0]["traceback"].splitlines()
    assert frames[0] == "Traceback (most recent call last):"
    assert "testproject/demo/tasks.py" in frames[1]  # no frame of execution.py before it
    assert frames[-1] == "ValueError: boom"


def test_a_middleware_s_frames_stay_in_the_stored_traceback(settings, worker):
    settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": ["tests.middleware_for_tests.outer"]}
    job = always_fails.enqueue("boom")
    worker.drain()
    job.refresh_from_db()
    frames = job.errors[0]["traceback"].splitlines()
    assert "tests/middleware_for_tests.py" in frames[1]  # the first frame outside pgjobs
    assert any("testproject/demo/tasks.py" in line for line in frames)


def test_queue_backoff_applies_when_the_task_has_none(worker):
    QueueFactory(name="slow-retries", backoff_strategy="linear", backoff_base=10, backoff_jitter=0)
    job = Job.enqueue("testproject.demo.tasks.add", args=["x", 1], queue="slow-retries")
    worker = Worker(["slow-retries"])
    now = timezone.now()
    worker.drain(now=now)
    job.refresh_from_db()
    assert job.run_at == job.attempted_at + timedelta(seconds=10)
    worker.drain(now=job.run_at)
    job.refresh_from_db()
    assert job.run_at == job.attempted_at + timedelta(seconds=20)


def test_discard_job_ends_a_job_without_more_attempts(worker, settings):
    job = Job.enqueue("tests.tasks_for_tests.give_up")
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.DISCARDED and job.attempt == 1
    assert "not worth retrying" in job.errors[0]["error"]


def test_base_exceptions_from_a_task_are_recorded_not_fatal(worker):
    job = Job.enqueue("tests.tasks_for_tests.exits", max_attempts=1)
    follower = add.enqueue(1, 1)
    worker.drain()
    job.refresh_from_db()
    follower.refresh_from_db()
    assert job.state == JobState.DISCARDED and "SystemExit" in job.errors[0]["error"]
    assert follower.state == JobState.COMPLETED


def test_unknown_task_at_run_time_fails_the_attempt_and_the_worker_goes_on(worker):
    # Retried: a worker on newer code may know it (tests/test_version_skew.py).
    ghost = JobFactory(task="testproject.demo.tasks.removed_since")
    follower = add.enqueue(1, 1)
    worker.drain()
    ghost.refresh_from_db()
    follower.refresh_from_db()
    assert (ghost.state, ghost.attempt) == (JobState.RETRYABLE, 1)
    assert "unknown task" in ghost.errors[0]["error"]
    assert follower.state == JobState.COMPLETED


def test_higher_priority_runs_first_then_earlier_run_at(worker):
    now = timezone.now()
    late = record.using(run_at=now - timedelta(seconds=1)).enqueue("late")
    early = record.using(run_at=now - timedelta(seconds=2)).enqueue("early")
    urgent = record.using(priority=10).enqueue("urgent")
    claimed = worker.claim(3)
    assert [job.pk for job in claimed] == [urgent.pk, early.pk, late.pk]


def test_scheduled_jobs_wait_for_run_at(worker):
    job = add.using(run_at=timezone.now() + timedelta(minutes=5)).enqueue(1, 1)
    assert worker.drain() == {}
    assert worker.drain(now=job.run_at) == {"completed": 1}


def test_paused_queues_start_nothing(worker):
    Queue.objects.update_or_create(name="default", defaults={"paused": True})
    add.enqueue(1, 1)
    assert worker.drain() == {}
    Queue.objects.filter(name="default").update(paused=False)
    assert worker.drain() == {"completed": 1}


def test_queue_concurrency_is_a_global_limit(worker):
    QueueFactory(name="limited", concurrency=2)
    JobFactory(queue="limited", executing=True)
    for n in range(5):
        Job.enqueue("testproject.demo.tasks.add", [n, n], queue="limited")
    assert len(Worker(["limited"]).claim(10)) == 1  # one slot of two is taken elsewhere


def test_a_blocking_queue_runs_nothing_while_one_of_its_jobs_executes(worker):
    QueueFactory(name="serial", blocking=True)
    running = JobFactory(queue="serial", executing=True)
    Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="serial")
    serial_worker = Worker(["serial"])
    assert serial_worker.claim(10) == []
    Job.objects.filter(pk=running.pk).update(state=JobState.COMPLETED, lease=None)
    assert len(serial_worker.claim(10)) == 1


def test_a_blocking_queue_holds_its_order_while_the_head_waits_to_retry():
    QueueFactory(name="serial", blocking=True)
    head = JobFactory(queue="serial", retryable=True)  # runs again in 5 minutes
    Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="serial")
    serial_worker = Worker(["serial"])
    assert serial_worker.claim(10) == []
    claimed = serial_worker.claim(10, now=head.run_at)
    assert [job.pk for job in claimed] == [head.pk]


def test_a_worker_only_takes_jobs_from_its_queues():
    Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="mail")
    assert Worker(["default"]).drain() == {}
    assert Worker(["mail"]).drain() == {"completed": 1}


def test_jobs_write_through_the_orm_in_the_same_database(worker):
    record.enqueue("hello")
    worker.drain()
    assert list(Run.objects.values_list("tag", flat=True)) == ["hello"]


def test_auto_prefetch_claims_ahead_what_the_threads_start_within_its_horizon(db):
    worker = Worker(concurrency=10)  # WORKER_PREFETCH is "auto" by default
    assert worker.auto_prefetch and worker.prefetch == 0
    worker._adapt_prefetch(asked=10, got=10)
    assert worker.prefetch == 0, "nothing is known of the jobs' length yet"
    worker._run_seconds = 0.0002  # no-ops: as many as 10 per thread
    worker._adapt_prefetch(asked=10, got=3)
    assert worker.prefetch == 0, "a short claim: nothing more is due, no need to grow"
    worker._adapt_prefetch(asked=10, got=10)
    assert worker.prefetch == 100
    worker._adapt_prefetch(asked=110, got=20)  # the queue ran dry: no reason to shrink
    assert worker.prefetch == 100
    worker._run_seconds = 0.01  # 10-ms jobs: what 10 threads start within 50 ms
    worker._adapt_prefetch(asked=60, got=2)
    assert worker.prefetch == 50, "longer jobs shrink it at once, full claim or not"
    worker._run_seconds = 1.0  # long jobs: never prefetched
    worker._adapt_prefetch(asked=60, got=60)
    assert worker.prefetch == 0
    worker._run_seconds = 0.0002
    worker._snoozed = True  # a job waited for a limit: nothing is claimed ahead
    worker._adapt_prefetch(asked=10, got=10)
    assert worker.prefetch == 0
    assert Worker(concurrency=10, prefetch=0).auto_prefetch is False
    with pytest.raises(ValueError, match='prefetch must be "auto" or 0 to 10,000 jobs'):
        Worker(concurrency=10, prefetch="lots")


def test_a_job_running_long_stops_auto_prefetch_before_its_run_time_is_known(db):
    """Short jobs made the prefetch large; a job that has been on its thread for a
    second means jobs got long: nothing more is claimed ahead, though the average of
    the last runs still says short."""
    worker = Worker(concurrency=10)
    worker._run_seconds = 0.0002
    worker._adapt_prefetch(asked=10, got=10)
    assert worker.prefetch == 100
    worker._started[1] = time.monotonic() - 1.0
    worker._adapt_prefetch(asked=10, got=10)
    assert worker.prefetch == 0
    worker._started.clear()
    worker._adapt_prefetch(asked=10, got=10)
    assert worker.prefetch == 100
