"""django_pgjobs.testing: the helpers users write their own tests with."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_pgjobs import Job, limits, signals, testing
from django_pgjobs.compat import TaskResultStatus
from django_pgjobs.exceptions import InvalidOption
from django_pgjobs.models import Queue, Schedule
from django_pgjobs.states import JobState
from testproject.demo.tasks import add, always_fails, send_welcome
from tests import django_tasks_for_tests as django_tasks

pytestmark = pytest.mark.django_db


def test_drain_runs_what_is_due_and_counts_the_outcomes():
    add.enqueue(1, 2)
    always_fails.using(max_attempts=1).enqueue()
    assert testing.drain() == {"completed": 1, "discarded": 1}
    assert testing.drain() == {}


def test_drain_can_be_limited_to_queues():
    add.enqueue(1, 2)
    mail = send_welcome.enqueue(7)
    assert testing.drain("mail") == {"completed": 1}
    mail.refresh_from_db()
    assert mail.result == "welcome mail sent to user 7"
    assert testing.enqueued_jobs(add)


def test_drain_runs_jobs_that_jobs_enqueue():
    Job.enqueue("tests.tasks_for_tests.enqueue_follow_up", args=[4])
    assert testing.drain() == {"completed": 2}
    assert Job.objects.get(task="testproject.demo.tasks.add").result == 8


def test_drain_can_raise_the_error_of_a_failed_job_after_recording_it():
    job = always_fails.enqueue("no such order")
    with pytest.raises(ValueError, match="no such order"):
        testing.drain(raise_errors=True)
    job.refresh_from_db()
    assert job.state == JobState.RETRYABLE and len(job.errors) == 1


def test_run_inline_runs_each_job_before_enqueue_returns():
    with testing.run_inline():
        job = add.enqueue(2, 3)
        assert (job.state, job.result) == (JobState.COMPLETED, 5)
        parent = Job.enqueue("tests.tasks_for_tests.enqueue_follow_up", args=[1])
    assert parent.state == JobState.COMPLETED
    assert Job.objects.filter(state=JobState.COMPLETED).count() == 3
    outside = add.enqueue(1, 1)
    assert outside.state == JobState.AVAILABLE


def test_run_inline_leaves_jobs_scheduled_for_later_alone():
    with testing.run_inline():
        job = add.using(run_at=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    assert job.state == JobState.SCHEDULED


def test_run_inline_records_failures_or_raises_them():
    with testing.run_inline():
        job = always_fails.using(max_attempts=1).enqueue("declined")
    assert job.state == JobState.DISCARDED
    with testing.run_inline(raise_errors=True), pytest.raises(ValueError, match="declined"):
        always_fails.enqueue("declined")


def test_run_inline_raising_a_job_s_error_leaves_every_job_s_signal_sent():
    """run_inline's raise is the enqueue call's, not a job_enqueued receiver's: each job
    written is told of to every receiver (even one connected inside the block), before
    the first job's error stops the enqueue."""
    heard: list[str] = []

    def receiver(sender: Any, job: Job, **kwargs: Any) -> None:
        heard.append(job.args[0])

    with testing.run_inline(raise_errors=True):
        signals.job_enqueued.connect(receiver, weak=False)
        try:
            with pytest.raises(ValueError, match="declined"):
                always_fails.enqueue("declined")
            specs = [{"task": always_fails.name, "args": ["first"]},
                     {"task": always_fails.name, "args": ["second"]}]  # fmt: skip
            with pytest.raises(ValueError, match="first"):
                Job.enqueue_many(specs)
        finally:
            signals.job_enqueued.disconnect(receiver)
    assert heard == ["declined", "first", "second"]
    assert not Job.objects.filter(state=JobState.AVAILABLE).exists()


def test_run_inline_works_for_django_tasks():
    with testing.run_inline():
        result = django_tasks.add.enqueue(20, 22)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


def test_assert_enqueued_matches_task_arguments_and_queue():
    send_welcome.enqueue(42)
    [job] = testing.assert_enqueued(send_welcome, args=[42], queue="mail")
    assert job.args == [42]
    testing.assert_enqueued("testproject.demo.tasks.send_welcome", count=1)
    testing.assert_not_enqueued(send_welcome, args=[43])
    testing.assert_not_enqueued(add)


def test_assert_enqueued_failures_show_what_is_enqueued():
    send_welcome.enqueue(42)
    with pytest.raises(AssertionError) as failure:
        testing.assert_enqueued(send_welcome, args=[7])
    message = str(failure.value)
    assert "expected a job of testproject.demo.tasks.send_welcome with args=[7]; found 0" in message
    assert "queue='mail'" in message and "args=[42]" in message
    with pytest.raises(AssertionError, match="expected no job"):
        testing.assert_not_enqueued(send_welcome)
    with pytest.raises(AssertionError, match="expected 2 job"):
        testing.assert_enqueued(send_welcome, count=2)


def test_jobs_that_started_no_longer_count_as_enqueued():
    add.enqueue(1, 1)
    testing.drain()
    testing.assert_not_enqueued(add)


def test_assert_enqueued_accepts_django_tasks():
    django_tasks.add.enqueue(1, b=2)
    testing.assert_enqueued(django_tasks.add, args=[1], kwargs={"b": 2}, queue="mail", priority=2)


def test_assert_enqueued_refuses_what_is_not_a_task():
    with pytest.raises(TypeError, match="expected a task"):
        testing.assert_enqueued(42)


def test_frozen_time_runs_scheduled_jobs_when_advanced_past_run_at():
    with testing.freeze_time(datetime(2030, 1, 1, 9, tzinfo=UTC)) as clock:
        job = add.using(run_at=clock.now + timedelta(days=1)).enqueue(1, 1)
        assert job.created_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
        assert testing.drain() == {}
        clock.advance(hours=23, minutes=59)
        assert testing.drain() == {}
        clock.advance(minutes=1)
        assert testing.drain() == {"completed": 1}
    job.refresh_from_db()
    assert job.finished_at == datetime(2030, 1, 2, 9, tzinfo=UTC)


def test_a_job_retried_under_frozen_time_is_due_on_that_clock():
    # A retry makes its job due at the clock pgjobs reads (timezone.now, which
    # freeze_time stops), as the drain that runs it reads it: a test frozen in the past
    # retried a discarded job, and drain() never ran it again.
    with testing.freeze_time(datetime(2020, 1, 1, 9, tzinfo=UTC)) as clock:
        job = always_fails.using(max_attempts=1).enqueue()
        assert testing.drain() == {"discarded": 1}
        job.refresh_from_db()
        job.retry()
        job.refresh_from_db()
        assert job.run_at == clock.now
        assert testing.drain() == {"discarded": 1}


def test_frozen_time_walks_a_job_through_its_retries():
    # always_fails retries after a fixed 0.5 s.
    with testing.freeze_time() as clock:
        job = always_fails.using(max_attempts=3).enqueue()
        assert testing.drain() == {"retryable": 1}
        assert testing.drain() == {}
        clock.advance(seconds=0.5)
        assert testing.drain() == {"retryable": 1}
        clock.advance(timedelta(seconds=0.5))
        assert testing.drain() == {"discarded": 1}
    job.refresh_from_db()
    assert [e["attempt"] for e in job.errors] == [1, 2, 3]


def test_a_frozen_clock_stands_at_an_instant_a_row_holds_as_the_real_clock_gives_it():
    """It stood at the time as given: in an offset PostgreSQL doesn't take (+20:00) every
    enqueue under it was a DataError (its created_at), and in year 1 or on 9999-12-31
    an IntegrityError; either aborted the test's transaction."""
    from django.db import transaction

    far_east = datetime(2030, 1, 1, tzinfo=timezone.get_fixed_timezone(20 * 60))
    with testing.freeze_time(far_east) as clock:
        assert clock() == far_east and clock().utcoffset() == timedelta(0)  # UTC, as now()
        job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
        assert Job.objects.get(pk=job.pk).created_at == datetime(2029, 12, 31, 4, tzinfo=UTC)
    with transaction.atomic():
        for at in (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
            with pytest.raises(ValueError, match="is out of range"), testing.freeze_time(at):
                pass
        with testing.freeze_time(datetime(9999, 12, 30, 12, tzinfo=UTC)) as clock:
            with pytest.raises(ValueError, match=r"9999-12-31T00:00:00.* is out of range"):
                clock.advance(hours=12)
            assert clock() == datetime(9999, 12, 30, 12, tzinfo=UTC)
        assert Job.objects.filter(pk=job.pk).exists()  # the transaction goes on


def test_frozen_time_refuses_naive_times_and_going_backwards():
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"), testing.freeze_time(naive):
        pass
    with testing.freeze_time() as clock, pytest.raises(ValueError, match="forward"):
        clock.advance(seconds=-1)
    before = timezone.now()
    assert before <= timezone.now(), "the real clock is back"


def test_drain_runs_a_whole_pipeline_stage_after_stage():
    from django_pgjobs.pipelines import enqueue_pipeline
    from testproject.demo.tasks import square, total

    *_, (gathered,) = enqueue_pipeline(
        [square.spec(n) for n in range(4)], total.using(pass_results=True).spec()
    )
    assert testing.drain() == {"completed": 5}
    gathered.refresh_from_db()
    assert gathered.result == 0 + 1 + 4 + 9


def test_run_inline_runs_a_dependent_job_in_the_drain_that_runs_its_dependency():
    first = add.enqueue(1, 1)  # enqueued before run_inline: not run yet
    with testing.run_inline():
        follower = Job.enqueue("testproject.demo.tasks.add", [2, 2], depends_on=[first])
    assert Job.objects.get(pk=first.pk).state == JobState.COMPLETED
    assert (follower.state, follower.result) == (JobState.COMPLETED, 4)


# -- a now near the end of the times a row holds -------------------------------------------


def slow_queue() -> str:
    """A queue whose jobs retry a year after each failure: the longest backoff."""
    Queue.objects.create(
        name="yearly", backoff_strategy="fixed", backoff_base=limits.MAX_SECONDS,
        backoff_max=limits.MAX_SECONDS, backoff_jitter=0,
    )  # fmt: skip
    return "yearly"


def test_a_drain_a_moment_before_the_latest_now_stores_a_retry_a_year_later():
    job = Job.enqueue("tests.tasks_for_tests.raises_odd", args=["plain"], queue=slow_queue())
    now = limits.LATEST_NOW - timedelta(microseconds=1)
    assert testing.drain(now=now) == {"retryable": 1}
    assert Job.objects.get(pk=job.pk).run_at == now + timedelta(seconds=limits.MAX_SECONDS)


def test_a_drain_under_a_clock_frozen_near_9999_is_refused_before_it_claims():
    # Its retry, a year later, lay past 9999-12-31: an OverflowError escaped the drain
    # and left the job it had claimed executing.
    job = Job.enqueue("tests.tasks_for_tests.raises_odd", args=["plain"], queue=slow_queue())
    late = r"the clock's now 9999-06-01T00:00:00\+00:00 is too late: it must lie before 9998-12-31"
    with (
        testing.freeze_time(datetime(9999, 6, 1, tzinfo=UTC)),
        pytest.raises(InvalidOption, match=late),
    ):
        testing.drain()
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


def test_a_scheduler_whose_clock_stands_near_9999_is_refused_before_it_fires():
    from django_pgjobs.scheduler import Scheduler

    Schedule.objects.create(name="daily", cron="@every 1d", task="testproject.demo.tasks.add")
    scheduler = Scheduler(routines=[], clock=lambda: datetime(9999, 12, 30, 23, tzinfo=UTC))
    with pytest.raises(InvalidOption, match="the clock's now 9999-12-30T23:00:00"):
        scheduler.run_once()
    with pytest.raises(InvalidOption, match="the clock's now 9999-12-30T23:00:00"):
        scheduler.fire_due()
    assert Schedule.objects.get().next_fire_at is None


def test_a_frozen_clock_advanced_past_year_9999_says_so_and_stays():
    with testing.freeze_time(datetime(9999, 12, 30, tzinfo=UTC)) as clock:
        with pytest.raises(ValueError, match=r"reaches past 9999-12-31T23:59:59.999999, the last "
                           "time Python holds"):  # fmt: skip
            clock.advance(days=3)
        assert clock() == datetime(9999, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize("value, shown", [(1, "1"), ("no", "'no'"), (None, "None")])
def test_raise_errors_is_true_or_false_as_every_flag_is(value, shown):
    """Taken for its truth, raise_errors="no" raised a job's error."""
    job = Job.enqueue("testproject.demo.tasks.always_fails")
    message = f"^raise_errors must be True or False, not {shown}$"
    with pytest.raises(InvalidOption, match=message):
        testing.drain(raise_errors=value)
    with pytest.raises(InvalidOption, match=message), testing.run_inline(raise_errors=value):
        pass
    job.refresh_from_db()
    assert job.state == JobState.AVAILABLE  # nothing ran


@pytest.mark.parametrize(
    "step, units, problem",
    [
        ("1", {}, "must be a timedelta, not '1'"),
        (None, {"seconds": float("nan")}, "seconds=nan is no length of time"),
        (None, {"days": 10**12}, "days=1000000000000 is no length of time"),
        (None, {"years": 1}, "years=1 is no length of time"),
        (timedelta(days=1), {"days": 1}, "takes a timedelta or units, not both"),
    ],
)
def test_a_frozen_clock_refuses_an_advance_that_is_no_length_of_time(step, units, problem):
    """Handed straight to timedelta(), these raised its TypeError ("'years' is an invalid
    keyword argument for __new__()"), ValueError ("cannot convert float NaN to integer")
    or OverflowError; a string failed comparing itself with timedelta(0); a timedelta and
    units together dropped the units."""
    at = datetime(2030, 1, 1, tzinfo=UTC)
    with testing.freeze_time(at) as clock:
        with pytest.raises(InvalidOption, match=re.escape(problem)):
            clock.advance(step, **units)
        assert clock() == at


@pytest.mark.parametrize("queues", [5, 1.5, object()])
def test_drain_refuses_queues_that_are_no_names(queues):
    """``drain(5)`` was "TypeError: 'int' object is not iterable", from inside the worker."""
    with pytest.raises(InvalidOption, match=r"^queues must be a queue name or a list of them"):
        testing.drain(queues)
    assert not Job.objects.exists()  # the test's transaction goes on
