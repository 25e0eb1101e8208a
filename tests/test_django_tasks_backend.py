"""Django's Tasks framework on pgjobs: PgJobsBackend, on Django 6 and on 5.2 with the backport."""

from __future__ import annotations

import logging
import math
import re
import secrets
import sys
from datetime import date, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core import checks
from django.db import transaction
from django.utils import timezone

from django_pgjobs import Job, PayloadError, UnknownQueue, execution
from django_pgjobs.compat import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from django_pgjobs.states import JobState
from testproject.demo.tasks import add as pgjobs_add
from tests import django_tasks_for_tests as django_tasks
from tests.factories import JobFactory

try:
    from django.tasks.exceptions import TaskResultMismatch
except ImportError:
    from django_tasks.exceptions import TaskResultMismatch

pytestmark = pytest.mark.django_db

ADD = "tests.django_tasks_for_tests.add"


@pytest.fixture
def backend():
    return task_backends["default"]


@pytest.fixture
def sent():
    """Records Django's task signals as (signal name, status, result id)."""
    seen: list[tuple[str, str, str]] = []
    receivers = {}
    for name, signal in [
        ("enqueued", task_enqueued),
        ("started", task_started),
        ("finished", task_finished),
    ]:

        def receiver(sender, task_result, name=name, **kwargs):
            seen.append((name, task_result.status, task_result.id))

        receivers[signal] = receiver
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def test_enqueue_writes_a_job_for_the_function_path_and_returns_a_ready_result():
    result = django_tasks.add.enqueue(2, b=3)

    job = Job.objects.get(pk=int(result.id))
    assert (job.task, job.args, job.kwargs) == (ADD, [2], {"b": 3})
    assert (job.queue, job.priority, job.state) == ("mail", 2, JobState.AVAILABLE)
    assert result.status == TaskResultStatus.READY
    assert result.enqueued_at == job.created_at
    assert (result.args, result.kwargs, result.backend) == ([2], {"b": 3}, "default")
    assert not result.is_finished and result.attempts == 0


def test_enqueue_joins_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        django_tasks.add.enqueue(1, 2)
        raise RuntimeError("the view failed")
    assert not Job.objects.exists()


def test_a_completed_job_is_a_successful_result_with_the_return_value(worker):
    result = django_tasks.add.enqueue(2, 3)
    worker.drain()

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and result.errors == []
    assert result.started_at == result.last_attempted_at <= result.finished_at


def test_get_result_reads_the_job_from_any_process(backend, worker):
    result = django_tasks.add.enqueue(2, 3)
    worker.drain()
    again = django_tasks.add.get_result(result.id)
    assert again.id == result.id and again.return_value == 5
    assert backend.get_result(result.id).status == TaskResultStatus.SUCCESSFUL


def test_failed_attempts_are_retried_and_the_last_one_fails_the_result(worker):
    # flaky_charge: @task(max_attempts=2, timeout=30), always raises GatewayDown.
    result = django_tasks.flaky_charge.enqueue(7)
    job = Job.objects.get(pk=int(result.id))
    assert (job.max_attempts, job.timeout) == (2, 30)

    worker.drain()
    result.refresh()
    assert result.status == TaskResultStatus.READY, "a failed attempt with attempts left"
    assert result.attempts == 1
    [error] = result.errors
    assert error.exception_class is django_tasks.GatewayDown
    assert "could not charge order 7" in error.traceback

    job.refresh_from_db()
    worker.drain(now=job.run_at)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert result.attempts == 2 and len(result.errors) == 2
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


@pytest.mark.parametrize(
    "trait, status",
    [
        ("waiting", TaskResultStatus.READY),
        ("scheduled", TaskResultStatus.READY),
        ("available", TaskResultStatus.READY),
        ("retryable", TaskResultStatus.READY),
        ("executing", TaskResultStatus.RUNNING),
        ("completed", TaskResultStatus.SUCCESSFUL),
        ("discarded", TaskResultStatus.FAILED),
        ("cancelled", TaskResultStatus.FAILED),
    ],
)
def test_every_job_state_maps_onto_a_task_result_status(backend, trait, status):
    traits = {} if trait == "available" else {trait: True}
    job = JobFactory(task=ADD, **traits)
    assert backend.get_result(str(job.pk)).status == status


def test_run_after_defers_the_job(worker):
    later = timezone.now() + timedelta(minutes=10)
    result = django_tasks.add.using(run_after=later).enqueue(1, 1)

    job = Job.objects.get(pk=int(result.id))
    assert (job.state, job.run_at) == (JobState.SCHEDULED, later)
    assert worker.drain() == {}
    assert worker.drain(now=later) == {"completed": 1}


def test_django_priority_is_pgjobs_priority_so_both_kinds_of_task_share_one_order(worker):
    low = django_tasks.add.using(priority=-50, queue_name="default").enqueue(0, 0)
    native = pgjobs_add.using(priority=10).enqueue(0, 0)
    high = django_tasks.add.using(priority=100, queue_name="default").enqueue(0, 0)

    assert Job.objects.get(pk=int(high.id)).priority == 100
    claimed = worker.claim(3)
    assert [job.pk for job in claimed] == [int(high.id), native.pk, int(low.id)]


def test_a_priority_set_outside_djangos_range_reads_back_clamped(backend):
    job = JobFactory(task=ADD, priority=500)
    assert backend.get_result(str(job.pk)).task.priority == 100


def test_queue_name_is_the_pgjobs_queue_and_must_exist():
    assert Job.objects.get(pk=int(django_tasks.add.enqueue(1, 1).id)).queue == "mail"
    with pytest.raises(UnknownQueue, match="nowhere"):
        django_tasks.add.using(queue_name="nowhere").enqueue(1, 1)
    with pytest.raises(InvalidTask, match="invalid queue name"):
        django_tasks.add.using(queue_name="has spaces")
    assert Job.objects.count() == 1


def test_async_tasks_run_on_the_worker(worker):
    result = django_tasks.async_double.enqueue(21)
    worker.drain()
    result.refresh()
    assert result.return_value == 42


def test_aenqueue_and_aget_result():
    result = async_to_sync(django_tasks.add.aenqueue)(1, 2)
    fetched = async_to_sync(django_tasks.add.aget_result)(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert Job.objects.filter(pk=int(result.id)).exists()


def test_tasks_that_take_a_context_see_their_result_and_attempt(worker):
    result = django_tasks.which_attempt.enqueue()
    worker.drain()
    result.refresh()
    assert result.return_value == {"attempt": 1, "id": result.id}


def test_djangos_signals_follow_the_job(worker, sent):
    ok = django_tasks.add.enqueue(1, 1)
    failing = django_tasks.flaky_charge.enqueue(1)
    worker.drain()
    job = Job.objects.get(pk=int(failing.id))
    worker.drain(now=job.run_at)

    assert [s for s in sent if s[2] == ok.id] == [
        ("enqueued", TaskResultStatus.READY, ok.id),
        ("started", TaskResultStatus.RUNNING, ok.id),
        ("finished", TaskResultStatus.SUCCESSFUL, ok.id),
    ]
    # The failed first attempt leaves the result READY: no task_finished until the last.
    assert [s for s in sent if s[2] == failing.id] == [
        ("enqueued", TaskResultStatus.READY, failing.id),
        ("started", TaskResultStatus.RUNNING, failing.id),
        ("started", TaskResultStatus.RUNNING, failing.id),
        ("finished", TaskResultStatus.FAILED, failing.id),
    ]


def test_a_failed_results_task_finished_is_sent_while_its_error_is_handled(worker, caplog):
    # Django's own backends send task_finished inside the except block, and its receiver
    # logs the FAILED line with sys.exc_info(): sent outside one, Django 6's line came
    # without the traceback, and the backport's logger.exception printed "NoneType: None".
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((task_result.status, sys.exc_info()[1]))

    task_finished.connect(receiver)
    try:
        ok = django_tasks.add.enqueue(1, 1)
        failing = django_tasks.flaky_charge.enqueue(1)
        worker.drain()
        job = Job.objects.get(pk=int(failing.id))
        with caplog.at_level(logging.INFO):
            worker.drain(now=job.run_at)
    finally:
        task_finished.disconnect(receiver)
    [(ok_status, ok_error), (status, error)] = seen
    assert (ok_status, ok_error) == (TaskResultStatus.SUCCESSFUL, None), ok.id
    assert status == TaskResultStatus.FAILED
    assert isinstance(error, django_tasks.GatewayDown), error
    assert str(error) == "could not charge order 1"
    [line] = [r for r in caplog.records if "state=FAILED" in r.getMessage()]
    assert line.levelno == logging.ERROR and line.exc_info and line.exc_info[1] is error
    assert "NoneType: None" not in caplog.text
    assert sys.exc_info() == (None, None, None), "nothing left being handled"


def test_native_pgjobs_jobs_send_no_django_signals(worker, sent):
    pgjobs_add.enqueue(1, 1)
    worker.drain()
    assert sent == []


def test_pgjobs_options_on_using_are_honoured():
    result = django_tasks.add.using(max_attempts=4, timeout=2.5, unique_key="k").enqueue(1, 1)
    job = Job.objects.get(pk=int(result.id))
    assert (job.max_attempts, job.timeout, job.unique_key) == (4, 2.5, "k")


def test_a_held_unique_key_returns_the_existing_job_without_a_second_signal(sent):
    first = django_tasks.nightly_report.enqueue()
    second = django_tasks.nightly_report.enqueue()
    assert second.id == first.id
    assert Job.objects.count() == 1
    assert [name for name, _, _ in sent] == ["enqueued"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"unique_key": "x" * 256}, "unique_key"),
        # Django's own checks took the types for granted: AttributeError ("'str' object
        # has no attribute 'utcoffset'"), TypeError, ValueError from inside Django.
        ({"run_after": "2020"}, "run_after must be a timezone-aware datetime, not str '2020'"),
        ({"run_after": date(2020, 1, 1)}, "run_after must be a timezone-aware datetime, not date"),
        ({"priority": "5"}, "priority must be a whole number between -100 and 100, not '5'"),
        ({"priority": math.nan}, "priority must be a whole number between -100 and 100, not nan"),
    ],
)
def test_bad_pgjobs_options_are_refused(options, message):
    with pytest.raises(InvalidTask, match=message):
        django_tasks.add.using(**options)


def test_arguments_that_are_not_json_are_refused_naming_the_value():
    with pytest.raises(PayloadError, match=r"kwargs\['when'\]"):
        django_tasks.add.enqueue(1, when=timezone.now())
    assert not Job.objects.exists()


def test_get_result_of_something_that_is_not_a_django_task_job(backend):
    native = pgjobs_add.enqueue(1, 1)
    for result_id in ["999999", "not-a-number", str(native.pk)]:
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)
    other = django_tasks.add.enqueue(1, 1)
    with pytest.raises(TaskResultMismatch):
        django_tasks.async_double.get_result(other.id)


def test_the_backend_passes_its_system_checks():
    assert [m for m in checks.run_checks() if m.id and m.id.startswith("pgjobs.E1")] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_djangos_documentation_example_runs_on_a_worker_process(worker_process):
    # The example of Django's Tasks documentation, unchanged, enqueued here and
    # run by `manage.py runworker` in another process (which imports the module itself).
    result = django_tasks.email_users.enqueue(
        emails=["user@example.com"],
        subject="You have a message",
        message="Hello there!",
    )
    context = django_tasks.which_attempt.enqueue()

    process = worker_process("--burst", "--queues", "default")
    assert process.wait(timeout=60) == 0, process.output()

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == 1  # send_mail's count of messages sent
    assert result.worker_ids != [""]  # ran by a registered worker process
    assert "Subject: You have a message" in process.output()
    context.refresh()
    assert context.return_value == {"attempt": 1, "id": context.id}


def test_a_job_rescued_from_a_dead_worker_reports_worker_lost(backend):
    from django_pgjobs.exceptions import WorkerLost

    job = JobFactory(
        task=ADD,
        discarded=True,
        errors=[{"attempt": 1, "at": "", "error": "WorkerLost: worker 7 stopped", "traceback": ""}],
    )
    [error] = backend.get_result(str(job.pk)).errors
    assert error.exception_class is WorkerLost


def test_a_queues_list_in_tasks_restricts_queue_names():
    from django_pgjobs.backend import PgJobsBackend

    restricted = PgJobsBackend("restricted", {"BACKEND": "...", "QUEUES": ["default"]})
    restricted.validate_task(django_tasks.async_double)  # queue "default"
    with pytest.raises(InvalidTask, match="'mail' is not valid"):
        restricted.validate_task(django_tasks.add)  # queue "mail"


def test_system_checks_report_a_missing_app_and_bad_queue_names(monkeypatch):
    from django_pgjobs import backend as backend_module

    configured = backend_module.PgJobsBackend("x", {"QUEUES": ["ok", "not ok"]})
    assert [error.id for error in configured.check()] == ["pgjobs.E102"]
    monkeypatch.setattr(backend_module.apps, "is_installed", lambda name: False)
    assert "pgjobs.E101" in [error.id for error in configured.check()]


def test_a_task_without_the_app_says_to_install_it(monkeypatch):
    # A newcomer's project with TASKS set and django_pgjobs not in INSTALLED_APPS: E101
    # never ran (nothing imported django.tasks at startup, so its checks weren't
    # registered) and @task itself failed with "Model class
    # django_pgjobs.models.Queue doesn't declare an explicit app_label and isn't in an
    # application in INSTALLED_APPS".
    from django.core.exceptions import ImproperlyConfigured

    from django_pgjobs import backend as backend_module

    monkeypatch.setattr(backend_module.apps, "is_installed", lambda name: False)
    said = "TASKS['default'] uses PgJobsBackend but django_pgjobs is not installed: add "
    backend = django_tasks.add.get_backend()
    with pytest.raises(ImproperlyConfigured, match=re.escape(said)):
        backend.validate_task(django_tasks.add)  # what @task calls
    with pytest.raises(ImproperlyConfigured, match=re.escape(said)):
        django_tasks.add.enqueue(1, 2)
    with pytest.raises(ImproperlyConfigured, match="'django_pgjobs' to INSTALLED_APPS"):
        backend.get_result("1")
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("django_task", "args", "problem"),
    [
        (django_tasks.add, [1, 2, 3], "add() takes at most 2 positional argument(s), got 3"),
        (django_tasks.which_attempt, [1], "which_attempt() takes at most 0 positional"),
    ],
)
def test_arguments_a_django_task_cant_bind_are_refused_at_enqueue(django_task, args, problem):
    with pytest.raises(PayloadError) as refused:
        django_task.enqueue(*args)
    assert problem in str(refused.value)
    assert not Job.objects.exists()


def test_a_task_whose_arguments_its_claim_deferred_sees_them_whole(worker):
    """Arguments larger than a claim sends (loaded.INLINE_BYTES) are read when the job
    runs: the task, and Django's task_started, see them whole."""
    items = [secrets.token_hex(16) for _ in range(2_000)]  # ~70 KB, not compressible
    started = []

    def receiver(sender, task_result, **kwargs):
        started.append(task_result.args)

    task_started.connect(receiver)
    try:
        result = django_tasks.count_items.enqueue(items)
        (claimed,) = worker.claim(10)
        assert claimed.deferred == ("args",)
        assert execution.execute(claimed) == JobState.COMPLETED
    finally:
        task_started.disconnect(receiver)
    result.refresh()
    assert result.return_value == 2_000
    assert started == [[items]]
