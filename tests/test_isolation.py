"""Suspects (jobs a lost worker held) run alone in a child process of their own."""

from __future__ import annotations

import os

import pytest
from django.db import connection

from django_pgjobs import Job
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from testproject.demo.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def suspect(task: str, *args, **options) -> Job:
    job = Job.enqueue(task, args=list(args), **options)
    Job.objects.filter(pk=job.pk).update(meta={"crashes": 1})
    return job


def test_a_suspect_runs_in_a_child_process_and_completes():
    job = suspect("tests.tasks_for_tests.recorded_pid", "alone")
    plain = Job.enqueue("tests.tasks_for_tests.recorded_pid", args=["shared"])
    assert Worker(concurrency=2).drain() == {"completed": 2}
    job.refresh_from_db()
    plain.refresh_from_db()
    assert job.state == JobState.COMPLETED and job.attempt == 1
    assert job.result != os.getpid() and plain.result == os.getpid()
    assert set(Run.objects.values_list("tag", flat=True)) == {"alone", "shared"}


def test_a_suspect_that_kills_its_process_has_the_attempt_counted_and_is_retried():
    job = suspect("tests.tasks_for_tests.poison", "sigkill")
    assert Worker().drain() == {"retryable": 1}
    job.refresh_from_db()
    assert job.attempt == 1 and job.state == JobState.RETRYABLE
    assert job.errors[-1]["error"] == "WorkerLost: the job's process died with SIGKILL"


def test_a_suspect_on_its_last_attempt_that_kills_its_process_is_discarded():
    job = suspect("tests.tasks_for_tests.poison", "exit", max_attempts=1)
    assert Worker().drain() == {"discarded": 1}
    job.refresh_from_db()
    assert job.attempt == 1 and "exited with status 3" in job.errors[-1]["error"]


def test_a_suspect_stuck_past_its_timeout_is_killed(threaded_worker, wait):
    job = suspect("tests.tasks_for_tests.blocked", 30, timeout=0.2, max_attempts=1)
    threaded_worker()
    wait(lambda: Job.objects.get(pk=job.pk).state == JobState.DISCARDED, timeout=15)
    job.refresh_from_db()
    assert "timeout of 0.2s; its process was killed" in job.errors[-1]["error"]


def test_cancelling_a_running_suspect_kills_its_process(threaded_worker, wait):
    job = suspect("tests.tasks_for_tests.until_cancelled", "iso", 30)
    worker = threaded_worker()
    wait(lambda: Run.objects.filter(tag="iso:start").exists(), timeout=15)
    Job.objects.get(pk=job.pk).cancel()
    wait(lambda: job.pk not in worker.running, timeout=5)
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED
    # Killed, not told: a sync task in a thread would have seen the flag instead.
    assert not Run.objects.filter(tag="iso:saw-cancel").exists()


def test_run_due_runs_a_suspect_in_a_child_and_outlives_it():
    from django_pgjobs import inline

    job = suspect("tests.tasks_for_tests.poison", "segfault")
    assert inline.run_due().outcomes() == {"retryable": 1}  # this process survived
    assert "SIGSEGV" in Job.objects.get(pk=job.pk).errors[-1]["error"]


def test_a_task_declared_isolated_runs_each_attempt_in_a_child_process(threaded_worker, wait):
    quick = Job.enqueue("tests.tasks_for_tests.isolated_pid")
    stuck = Job.enqueue(
        "tests.tasks_for_tests.isolated_pid", args=[30], timeout=0.2, max_attempts=1
    )
    threaded_worker()
    wait(lambda: Job.objects.get(pk=quick.pk).state == JobState.COMPLETED, timeout=15)
    assert Job.objects.get(pk=quick.pk).result != os.getpid()
    # A hard timeout: the sleep can't be interrupted in a thread, its process is killed.
    wait(lambda: Job.objects.get(pk=stuck.pk).state == JobState.DISCARDED, timeout=15)
    assert "its process was killed" in Job.objects.get(pk=stuck.pk).errors[-1]["error"]


def test_a_job_thread_whose_connection_was_ended_meanwhile_still_records_its_child_s_death(
    worker_process, wait
):
    """While a child runs its job, the worker's thread waits with its connection idle,
    and that connection may be ended meanwhile (pg_terminate_backend, the server's
    idle_session_timeout, a restart). The thread's read of what the child did failed:
    "crashed" with a traceback, the death of the child unrecorded (the job left
    executing under the live worker until reclaimed, 60 s on, counting an attempt),
    and the same for every later job run alone on that thread."""
    from django_pgjobs.models import WorkerProcess

    process = worker_process("--concurrency", "1", env={"PGJOBS_POLL_INTERVAL": "0.5"})
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    first = Job.enqueue("tests.tasks_for_tests.isolated_pid")  # the thread connects
    wait(lambda: Job.objects.get(pk=first.pk).state == JobState.COMPLETED, timeout=30)
    dying = Job.enqueue("tests.tasks_for_tests.dies_alone", args=[2])
    wait(lambda: Job.objects.get(pk=dying.pk).state == JobState.EXECUTING, timeout=30)
    with connection.cursor() as cursor:  # the thread's, idle since its last read
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'idle'"
            ' AND query LIKE \'SELECT "pgjobs_job"."state" AS "state", "pgjobs_job"."lease"%%\''
        )
        assert cursor.fetchone()[0] == 1
    wait(lambda: Job.objects.get(pk=dying.pk).state == JobState.DISCARDED, timeout=30)
    dying.refresh_from_db()
    assert "exited with status 3" in dying.errors[-1]["error"], dying.errors
    later = Job.enqueue("tests.tasks_for_tests.isolated_pid")
    wait(lambda: Job.objects.get(pk=later.pk).state == JobState.COMPLETED, timeout=30)
    assert process.stop() == 0
    assert "crashed" not in process.output(), process.output()[-3000:]
