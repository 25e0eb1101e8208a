"""A signal receiver that raises: the change its signal tells of stands (never written
again nor counted as anything else), every other receiver and every other job still
gets its signal, and the error is logged once, with the job and the receiver."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from django_pgjobs import Job, maintenance, signals
from django_pgjobs.compat import task_enqueued, task_finished, task_started
from django_pgjobs.states import JobState
from testproject.demo.tasks import add, always_fails
from tests import django_tasks_for_tests as django_tasks
from tests.factories import JobFactory, WorkerProcessFactory

pytestmark = pytest.mark.django_db(transaction=True)


class ReceiverBroke(Exception):
    pass


def broken(sender: Any, **kwargs: Any) -> None:
    raise ReceiverBroke("the receiver's own bug")


@contextlib.contextmanager
def connected(signal: Signal, *receivers: Callable[..., Any]) -> Iterator[None]:
    """``receivers`` connected to ``signal`` in this order (so ``broken`` first is
    called before the others), disconnected after."""
    for receiver in receivers:
        signal.connect(receiver, weak=False)
    try:
        yield
    finally:
        for receiver in receivers:
            signal.disconnect(receiver)


def heard(seen: list[int]) -> Callable[..., None]:
    def receiver(sender: Any, job: Any = None, task_result: Any = None, **kwargs: Any) -> None:
        seen.append(job.pk if job is not None else int(task_result.id))

    return receiver


def said_about(caplog: pytest.LogCaptureFixture, signal_name: str) -> list[logging.LogRecord]:
    """Records that say a receiver of ``signal_name`` raised."""
    return [r for r in caplog.records if f"{signal_name} receiver" in r.getMessage()]


def assert_said_once_each(
    caplog: pytest.LogCaptureFixture, signal_name: str, job_ids: list[int]
) -> None:
    records = said_about(caplog, signal_name)
    assert sorted(int(r.job_id) for r in records) == sorted(job_ids), [  # type: ignore[attr-defined]
        r.getMessage() for r in records
    ]
    for record in records:
        assert record.name.startswith("django_pgjobs")
        assert record.levelno == logging.ERROR
        assert "tests.test_raising_receivers.broken" in record.getMessage()
        assert record.exc_info and isinstance(record.exc_info[1], ReceiverBroke)
    # Once: not a second time by Django's send_robust (logger django.dispatch).
    assert not [r for r in caplog.records if r.name == "django.dispatch"]


# -- the worker's outcome signals ---------------------------------------------------------


def test_a_raising_job_completed_receiver_leaves_a_running_workers_batch_written_and_heard(
    threaded_worker, wait, caplog
):
    # The reviewer's case: the receiver's error escaped the outcome write, was taken
    # for a failed write ("crashed", or each outcome written again and found "lost"),
    # and the rest of the batch got no signal.
    seen: list[int] = []
    with connected(signals.job_completed, broken, heard(seen)):
        jobs = Job.enqueue_many([{"task": add.name, "args": [n, 1]} for n in range(8)])
        ids = [job.pk for job in jobs]
        worker = threaded_worker(concurrency=4)
        wait(lambda: worker.stats["completed"] + worker.stats["crashed"] >= 8, timeout=20)
        wait(lambda: sorted(seen) == sorted(ids), timeout=5)
    assert worker.stats == {"completed": 8}
    rows = Job.objects.filter(pk__in=ids)
    assert {(job.state, job.attempt) for job in rows} == {(JobState.COMPLETED, 1)}
    assert sorted(seen) == sorted(ids)  # each job once, after the broken receiver
    assert_said_once_each(caplog, "job_completed", ids)
    assert "writing" not in caplog.text and "written already" not in caplog.text


def test_a_raising_job_completed_receiver_lets_drain_go_on(worker, caplog):
    seen: list[int] = []
    with connected(signals.job_completed, broken, heard(seen)):
        ids = [add.enqueue(n, 1).pk for n in range(3)]
        assert worker.drain() == {"completed": 3}
    assert sorted(seen) == ids
    assert_said_once_each(caplog, "job_completed", ids)


def test_a_raising_async_receiver_is_logged_and_the_others_are_called(worker, caplog):
    seen: list[int] = []

    async def broken_async(sender: Any, job: Any, **kwargs: Any) -> None:
        raise ReceiverBroke("an async receiver's own bug")

    async def heard_async(sender: Any, job: Any, **kwargs: Any) -> None:
        seen.append(job.pk)

    with connected(signals.job_completed, broken_async, heard_async):
        job = add.enqueue(1, 1)
        assert worker.drain() == {"completed": 1}
    assert seen == [job.pk]
    [record] = said_about(caplog, "job_completed")
    assert f"job {job.pk}: " in record.getMessage() and "broken_async" in record.getMessage()
    assert record.exc_info and isinstance(record.exc_info[1], ReceiverBroke)


@pytest.mark.parametrize("signal_name", ["job_retrying", "job_discarded"])
def test_a_raising_failure_receiver_leaves_the_failure_written_as_it_is(
    worker, caplog, signal_name
):
    seen: list[int] = []
    with connected(getattr(signals, signal_name), broken, heard(seen)):
        job = always_fails.using(max_attempts=1 if signal_name == "job_discarded" else 3).enqueue(
            "x"
        )
        ended = worker.drain()
    expected = JobState.DISCARDED if signal_name == "job_discarded" else JobState.RETRYABLE
    assert ended == {expected: 1}
    job.refresh_from_db()
    assert (job.state, job.attempt, len(job.errors)) == (expected, 1, 1)
    assert seen == [job.pk]
    assert_said_once_each(caplog, signal_name, [job.pk])


def test_a_raising_job_started_receiver_does_not_keep_the_job_from_running(worker, caplog):
    seen: list[int] = []
    with connected(signals.job_started, broken, heard(seen)):
        job = add.enqueue(2, 3)
        assert worker.drain() == {"completed": 1}
    job.refresh_from_db()
    assert (job.state, job.result, job.attempt) == (JobState.COMPLETED, 5, 1)
    assert seen == [job.pk]
    assert_said_once_each(caplog, "job_started", [job.pk])


def test_a_raising_job_started_receiver_in_a_running_worker_neither_crashes_nor_holds_the_job(
    threaded_worker, wait, caplog
):
    with connected(signals.job_started, broken):
        job = add.enqueue(2, 3)
        worker = threaded_worker(concurrency=2)
        wait(lambda: sum(worker.stats.values()) >= 1, timeout=20)
    assert worker.stats == {"completed": 1}
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, 5)
    assert_said_once_each(caplog, "job_started", [job.pk])


# -- signals of the other writes ----------------------------------------------------------


def test_a_raising_job_enqueued_receiver_leaves_every_job_enqueued_and_heard(caplog):
    # Written (committed, outside a transaction) before the signal: raising then told
    # the caller its enqueue failed, and a caller that tried again enqueued it twice.
    seen: list[int] = []
    with connected(signals.job_enqueued, broken, heard(seen)):
        one = add.enqueue(1, 1)
        many = Job.enqueue_many([{"task": add.name, "args": [n, 1]} for n in range(3)])
    ids = [one.pk, *(job.pk for job in many)]
    assert sorted(seen) == sorted(ids)
    assert Job.objects.filter(pk__in=ids).count() == 4
    assert_said_once_each(caplog, "job_enqueued", ids)


def test_a_raising_job_enqueued_receiver_leaves_the_callers_transaction_usable(caplog):
    with connected(signals.job_enqueued, broken), transaction.atomic():
        job = add.enqueue(1, 1)
        Job.objects.filter(pk=job.pk).update(priority=7)  # the transaction goes on
    assert Job.objects.get(pk=job.pk).priority == 7
    assert_said_once_each(caplog, "job_enqueued", [job.pk])


def test_a_raising_job_cancelled_receiver_leaves_the_job_cancelled(caplog):
    seen: list[int] = []
    job = add.enqueue(1, 1)
    with connected(signals.job_cancelled, broken, heard(seen)):
        assert job.cancel().state == JobState.CANCELLED
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED
    assert seen == [job.pk]
    assert_said_once_each(caplog, "job_cancelled", [job.pk])


def test_a_raising_receiver_of_a_rescue_leaves_every_rescued_job_rescued_and_heard(caplog):
    now = timezone.now()
    dead = WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5))
    jobs = [JobFactory(executing=True, worker=dead, max_attempts=3) for _ in range(3)]
    seen: list[int] = []
    with connected(signals.job_retrying, broken, heard(seen)):
        assert maintenance.rescue_orphaned(now, stale_after=60) == 3
    ids = [job.pk for job in jobs]
    assert set(Job.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"available"}
    assert sorted(seen) == sorted(ids)
    assert_said_once_each(caplog, "job_retrying", ids)


# -- Django's task signals, relayed by the backend ----------------------------------------


def test_a_raising_task_enqueued_receiver_leaves_the_task_enqueued(caplog):
    seen: list[int] = []
    with connected(task_enqueued, broken, heard(seen)):
        result = django_tasks.add.enqueue(1, 2)
    assert Job.objects.filter(pk=int(result.id)).exists()
    assert seen == [int(result.id)]
    assert_said_once_each(caplog, "task_enqueued", [int(result.id)])


def test_a_raising_task_started_receiver_does_not_fail_the_task(worker, caplog):
    seen: list[int] = []
    with connected(task_started, broken, heard(seen)):
        result = django_tasks.add.enqueue(1, 2)
        assert worker.drain() == {"completed": 1}
    job = Job.objects.get(pk=int(result.id))
    assert (job.state, job.result, job.errors) == (JobState.COMPLETED, 3, [])
    assert seen == [job.pk]
    assert_said_once_each(caplog, "task_started", [job.pk])


def test_a_raising_task_finished_receiver_is_logged_once_with_its_job(worker, caplog):
    seen: list[int] = []
    with connected(task_finished, broken, heard(seen)):
        result = django_tasks.add.enqueue(1, 2)
        assert worker.drain() == {"completed": 1}
    assert seen == [int(result.id)]
    assert_said_once_each(caplog, "task_finished", [int(result.id)])


# -- a real worker process ----------------------------------------------------------------


def test_a_worker_process_whose_receivers_raise_completes_every_job_once_and_runs_on(
    worker_process, wait
):
    from testproject.demo.models import Run

    broken_task = "tests.tasks_for_tests.heard_by_broken_receivers"
    jobs = Job.enqueue_many([{"task": broken_task, "args": [n]} for n in range(12)])
    process = worker_process("--concurrency", "4", env={"PGJOBS_TEST_NO_LOGGING": "1"})
    ids = [job.pk for job in jobs]
    wait(lambda: Job.objects.filter(pk__in=ids, state="completed").count() == 12, timeout=30)
    follower = add.enqueue(1, 1)  # the worker goes on claiming
    wait(lambda: Job.objects.get(pk=follower.pk).state == JobState.COMPLETED, timeout=20)
    tags = list(Run.objects.values_list("tag", flat=True))
    assert process.stop() == 0
    output = process.output()
    # Every job's receivers called once each: none run again, none left unsignalled.
    assert sorted(tags) == sorted([f"started:{n}" for n in range(12)] +
                                  [f"completed:{n}" for n in range(12)])  # fmt: skip
    assert {job.attempt for job in Job.objects.filter(pk__in=ids)} == {1}
    [stop] = [line for line in output.splitlines() if " stopped after " in line]
    assert stop.endswith(" stopped after 13 attempts: 13 completed"), output
    for which in ("job_started", "job_completed"):
        said = [line for line in output.splitlines() if f": {which} receiver " in line]
        assert sorted(int(line.split("job ")[1].split(":")[0]) for line in said) == ids, output
    assert "_break_on_signal raised RuntimeError" in output
    assert "Traceback" in output and "crashed" not in output and "writing" not in output


class _OtherDjangoSignal:
    """A signal of a Django whose private lookup is named or shaped otherwise."""

    def __init__(self, lookup: Any) -> None:
        if lookup is not None:
            self._live_receivers = lookup


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(None, id="no _live_receivers"),
        pytest.param(lambda sender: [], id="a list, not (sync, async)"),
        pytest.param(lambda: ([], []), id="another signature"),
    ],
)
def test_a_private_receiver_lookup_of_another_django_is_not_used(lookup):
    """sending.py borrows Signal._live_receivers, Django's private lookup: it is used
    only where it has the shape it has in Django 5.2 to 6.1."""
    from django_pgjobs import sending

    assert sending.live_receivers(_OtherDjangoSignal(lookup), sender=None) is None


def test_without_the_private_lookup_every_signal_is_still_sent_and_each_error_logged(
    worker, caplog, monkeypatch
):
    """Where the lookup can't be borrowed, Django's public Signal.send_robust sends (and
    logs each error too, on django.dispatch, beside our record naming the job)."""
    from django_pgjobs import sending

    monkeypatch.setattr(sending, "live_receivers", lambda signal, sender: None)
    seen: list[int] = []
    with connected(signals.job_completed, broken, heard(seen)):
        ids = [add.enqueue(n, 1).pk for n in range(2)]
        assert worker.drain() == {"completed": 2}
    assert sorted(seen) == ids
    records = said_about(caplog, "job_completed")
    assert sorted(int(r.job_id) for r in records) == sorted(ids)  # type: ignore[attr-defined]
    assert all(isinstance(r.exc_info[1], ReceiverBroke) for r in records if r.exc_info)
