"""A rolling deploy: web processes enqueue for code some workers don't run yet.

A job whose task this worker doesn't know (``UnknownTask``), or whose arguments don't
fit the task's parameters here (``ArgumentMismatch``), was valid for the code that
enqueued it: its attempt fails saying so, with the job's backoff, and it is retried,
until a worker on newer code runs it or its attempts are used up. What no code could
run (arguments that are no JSON array and object, JSON Python can't read) is still
discarded at once (tests/test_hardening_rows.py)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_pgjobs import Job, tasks
from django_pgjobs.states import JobState
from django_pgjobs.tasks import task
from django_pgjobs.worker import Worker
from tests import conftest
from tests.factories import QueueFactory

#: A task newer code adds: the test process (the web side) registers it, workers don't.
ADDED = "tests.newer_code.added_since"
GREET = "tests.tasks_for_tests.greet"

#: In development the usual cause: the worker started before the task was written.
SKEW = (
    "This worker's code may be older than the code that enqueued the job (it started "
    "before the task was added or changed: restart it; or a rolling deploy is under way)"
)
RETRIED = "retried, as a worker running newer code may run it"
USED_UP = (
    "its attempts are used up, so it is discarded; retry it once every worker runs the "
    "code that enqueued it"
)
NO_GREETING = (
    "its arguments don't fit the task's parameters in this worker: "
    "kwargs['greeting']: greet() has no parameter 'greeting'"
)


def added_since(n: int) -> int:
    return n * 2


def greet_with(name: str, greeting: str = "hello") -> str:
    """``greet`` as newer code has it."""
    return f"{greeting} {name}"


class Code:
    """Which code this process runs: ``newer()`` registers what newer code has (the
    web side of a rolling deploy enqueues with it), ``older()`` what a worker not yet
    replaced has."""

    def __init__(self) -> None:
        self.saved = dict(tasks._registry)

    def newer(self) -> None:
        task(name=ADDED)(added_since)
        task(name=GREET, max_attempts=3, retry_on=ConnectionError)(greet_with)

    def older(self) -> None:
        tasks._registry.clear()
        tasks._registry.update(self.saved)


@pytest.fixture
def code() -> Iterator[Code]:
    code = Code()
    yield code
    code.older()


def enqueued_by_newer_code(code: Code, **options) -> tuple[Job, Job]:
    """A job of a task newer code added, and one passing an argument newer code added;
    the worker then runs the older code."""
    code.newer()
    added = Job.enqueue(ADDED, args=[21], **options)
    greeting = Job.enqueue(GREET, args=["ann"], kwargs={"greeting": "hi"}, **options)
    code.older()
    return added, greeting


def skew_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "can't run on this worker" in r.getMessage()]


@pytest.mark.django_db
def test_a_job_newer_code_enqueued_fails_its_attempt_saying_why_and_runs_on_newer_code(
    code, caplog
):
    QueueFactory(name="deploys", backoff_strategy="linear", backoff_base=10, backoff_jitter=0)
    added, greeting = enqueued_by_newer_code(code, queue="deploys")
    worker = Worker(["deploys"])
    with caplog.at_level(logging.INFO, logger="django_pgjobs"):
        assert worker.drain(now=timezone.now()) == {"retryable": 2}
    added.refresh_from_db()
    greeting.refresh_from_db()
    for job in (added, greeting):
        assert (job.state, job.attempt, len(job.errors)) == (JobState.RETRYABLE, 1, 1)
        error = job.errors[0]
        assert SKEW in error["error"] and error["error"].endswith(RETRIED)
        # Nothing failed in any code: no frames, only the error itself.
        assert "File " not in error["traceback"]
    assert added.errors[0]["error"].startswith(
        f"UnknownTask: unknown task '{ADDED}': no function decorated with @task has that "
        "dotted path in this worker. "
    )
    assert "PGJOBS['TASK_MODULES']" in added.errors[0]["error"]
    assert added.errors[0]["exception_class"] == "django_pgjobs.exceptions.UnknownTask"
    assert greeting.errors[0]["error"].startswith(
        f"ArgumentMismatch: job {greeting.pk}: {NO_GREETING}. {SKEW}"
    )
    assert greeting.errors[0]["exception_class"] == "django_pgjobs.exceptions.ArgumentMismatch"
    # Each by its backoff: the queue's for a task unknown here, else the task's own
    # (fixed 0.5 s). greet's retry_on judges what greet raises; it never ran.
    assert added.run_at - added.attempted_at == timedelta(seconds=10)
    assert greeting.run_at - greeting.attempted_at == timedelta(seconds=0.5)
    # One warning line per job, saying it all; no traceback.
    warnings = skew_warnings(caplog)
    assert len(warnings) == 2 and not any(r.exc_info for r in caplog.records)
    assert {r.levelname for r in caplog.records if "can't run" in r.getMessage()} == {"WARNING"}
    assert f"job {added.pk} ({ADDED}) attempt 1 can't run on this worker: UnknownTask: " in (
        warnings[0] + warnings[1]
    )
    # The workers are replaced: newer code runs them.
    code.newer()
    later = max(added.run_at, greeting.run_at)
    assert worker.drain(now=later) == {"completed": 2}
    added.refresh_from_db()
    greeting.refresh_from_db()
    assert (added.result, added.attempt) == (42, 2)
    assert (greeting.result, greeting.attempt) == ("hi ann", 2)


@pytest.mark.django_db
def test_such_a_job_is_discarded_only_once_its_attempts_are_used_up(code, caplog):
    added, greeting = enqueued_by_newer_code(code, max_attempts=2)
    worker = Worker()
    assert worker.drain() == {"retryable": 2}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="django_pgjobs"):
        assert worker.drain(now=max(j.run_at for j in Job.objects.all())) == {"discarded": 2}
    for job in (added, greeting):
        job.refresh_from_db()
        assert (job.state, job.attempt, len(job.errors)) == (JobState.DISCARDED, 2, 2)
        assert job.errors[-1]["error"].endswith(USED_UP)
    # The discard's warning is the attempt's one line.
    assert not skew_warnings(caplog)
    discards = [r for r in caplog.records if "discarded after attempt 2" in r.getMessage()]
    assert len(discards) == 2 and {r.levelname for r in discards} == {"WARNING"}


@pytest.mark.django_db
def test_a_typed_task_whose_stored_arguments_dont_fit_its_types_here_is_retried(worker):
    from tests.test_typed_arguments import GOOD, invoice

    job = invoice.enqueue(*GOOD)
    with connection.cursor() as cursor:  # as newer code, whose `when` takes "yesterday"
        cursor.execute("UPDATE pgjobs_job SET args = '[\"yesterday\", 1, 2, 3]' WHERE id = %s",
                       [job.pk])  # fmt: skip
    assert worker.drain() == {"retryable": 1}
    job.refresh_from_db()
    error = job.errors[-1]["error"]
    assert error.startswith(
        f"ArgumentMismatch: job {job.pk}: its arguments don't fit the task's types"
    )
    assert "args[0] (parameter 'when'): expected a date" in error and error.endswith(RETRIED)


@pytest.mark.django_db(transaction=True)
def test_a_suspect_run_alone_in_a_child_process_fails_its_attempt_the_same_way(code):
    """The isolated path: the child runs the job and writes its outcome (the worker
    writes only WorkerLost or JobTimeout)."""
    added, greeting = enqueued_by_newer_code(code)
    Job.objects.update(meta={"crashes": 1})  # a lost worker held them: each runs alone
    declared = Job.enqueue("tests.tasks_for_tests.isolated_pid")
    Job.objects.filter(pk=declared.pk).update(kwargs={"nope": 1})  # isolated=True
    assert Worker(concurrency=3).drain() == {"retryable": 3}
    errors = {pk: Job.objects.get(pk=pk).errors for pk in (added.pk, greeting.pk, declared.pk)}
    assert all(len(e) == 1 and e[0]["error"].endswith(RETRIED) for e in errors.values()), errors
    assert errors[added.pk][0]["error"].startswith(f"UnknownTask: unknown task '{ADDED}'")
    assert errors[greeting.pk][0]["error"].startswith(f"ArgumentMismatch: job {greeting.pk}: ")
    assert "isolated_pid() has no parameter 'nope'" in errors[declared.pk][0]["error"]


@pytest.mark.django_db
def test_pgjobs_show_and_the_django_tasks_backend_show_the_error(code):
    from django_pgjobs.compat import TaskResultStatus, task_backends

    _, greeting = enqueued_by_newer_code(code)
    bridged = Job.enqueue("tests.django_tasks_for_tests.add", args=[1, 2], queue="mail")
    Job.objects.filter(pk=bridged.pk).update(kwargs={"c": 3})
    Worker(["default", "mail"]).drain()
    out = io.StringIO()
    call_command("pgjobs", "show", str(greeting.pk), stdout=out)
    shown = out.getvalue()
    assert "attempt 1 at " in shown and f"ArgumentMismatch: job {greeting.pk}: " in shown
    assert RETRIED in shown and "Traceback" not in shown
    result = task_backends["default"].get_result(str(bridged.pk))
    assert result.status == TaskResultStatus.READY  # retryable: it runs again
    [error] = result.errors
    assert error.exception_class_path == "django_pgjobs.exceptions.ArgumentMismatch"
    assert "add() has no parameter 'c'" in error.traceback


# -- a real worker process on older code ------------------------------------------------------


def runworker_burst() -> str:
    env = {**os.environ, **conftest.test_database_env(), "PGJOBS_TEST_NO_LOGGING": "1"}
    result = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--burst"],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_on_older_code_retries_them_with_one_warning_an_attempt(code):
    added, greeting = enqueued_by_newer_code(code, max_attempts=2)
    first = runworker_burst()
    for job in (added, greeting):
        lines = [line for line in first.splitlines() if f"job {job.pk} " in line]
        assert len(lines) == 1 and " WARNING " in lines[0], first
        assert f"job {job.pk} ({job.task}) attempt 1 can't run on this worker: " in lines[0]
        assert lines[0].endswith(RETRIED)
    assert "Traceback" not in first
    assert first.splitlines()[-1].endswith("stopped after 2 attempts: 2 failed and will retry")
    Job.objects.update(run_at=added.created_at)  # due again
    second = runworker_burst()
    for job in (added, greeting):
        [line] = [line for line in second.splitlines() if f"job {job.pk} " in line]
        assert f"WARNING job {job.pk} ({job.task}) discarded after attempt 2: " in line
        assert line.endswith(USED_UP)
    assert "Traceback" not in second
    assert second.splitlines()[-1].endswith("stopped after 2 attempts: 2 discarded")
