"""Snooze, RetryAfter, retry_on / discard_on and backoff functions (docs/flow-control.md)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from datetime import timezone as timezone_of

import pytest
from django.db import transaction

from django_pgjobs import InvalidOption, Job, RetryAfter, Snooze, task, transitions
from django_pgjobs.states import JobState
from tests.admin_helpers import changelist, detail
from tests.factories import JobFactory
from tests.tasks_for_flow import ODD_SECONDS

S = JobState
FLOW = "tests.tasks_for_flow"
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def _drained(worker, job: Job, now: datetime = NOW) -> Job:
    worker.drain(now=now)
    job.refresh_from_db()
    return job


# -- snooze ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("returned", [False, True], ids=["raised", "returned"])
def test_a_snooze_waits_without_counting_an_attempt_or_an_error(worker, returned):
    job = Job.enqueue(
        f"{FLOW}.snooze_times", kwargs={"times": 2, "seconds": 30, "returned": returned}
    )

    job = _drained(worker, job)
    assert (job.state, job.attempt, job.errors, job.lease) == (S.SCHEDULED, 0, [], None)
    assert job.run_at == NOW + timedelta(seconds=30)
    assert job.meta["snoozed"]["count"] == 1
    assert job.meta["snoozed"]["reason"] == "waiting, 1 of 2"

    assert worker.drain(now=NOW + timedelta(seconds=29)) == {}, "it waits for its time"
    job = _drained(worker, job, NOW + timedelta(seconds=30))
    assert (job.state, job.attempt, job.meta["snoozed"]["count"]) == (S.SCHEDULED, 0, 2)
    job = _drained(worker, job, NOW + timedelta(seconds=60))
    assert (job.state, job.attempt, job.result) == (S.COMPLETED, 1, 2)


@pytest.mark.django_db
def test_a_snooze_is_a_line_at_verbosity_2_with_when_and_why(worker, caplog):
    """A job snoozing every second said nothing even at -v 2, which prints every job."""
    job = Job.enqueue(f"{FLOW}.snooze_times", kwargs={"times": 2, "seconds": 30})
    with caplog.at_level("INFO", logger="django_pgjobs.jobs"):
        worker.drain(now=NOW)
    said = [r.getMessage() for r in caplog.records if r.name == "django_pgjobs.jobs"]
    assert said == [
        f"job {job.pk} ({FLOW}.snooze_times) snoozed, runs again in 30s: waiting, 1 of 2"
    ]


@pytest.mark.django_db
def test_a_snooze_of_zero_seconds_makes_the_job_available_at_once(worker):
    job = Job.enqueue(f"{FLOW}.snooze_times", kwargs={"times": 1, "seconds": 0})
    worker.drain(now=NOW, max_jobs=1)
    job.refresh_from_db()
    assert (job.state, job.run_at, job.attempt) == (S.AVAILABLE, NOW, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(ODD_SECONDS))
def test_a_snooze_of_no_sensible_time_fails_the_attempt_with_a_clear_error(worker, kind):
    job = _drained(worker, Job.enqueue(f"{FLOW}.snooze_with", args=[kind]))
    assert (job.state, job.attempt) == (S.RETRYABLE, 1)
    assert "InvalidOption" in job.errors[0]["error"]
    assert "snoozed" not in job.meta


def test_snooze_and_retry_after_refuse_odd_times_when_made():
    for make in (Snooze, RetryAfter):
        with pytest.raises(InvalidOption, match="either seconds or until"):
            make()
        with pytest.raises(InvalidOption, match="either seconds or until"):
            make(1, until=NOW)
        with pytest.raises(InvalidOption, match="timezone-aware"):
            make(until=datetime(2030, 1, 1))
        with pytest.raises(InvalidOption, match="out of range"):
            make(until=datetime(1, 1, 1, tzinfo=UTC))
        with pytest.raises(InvalidOption, match="seconds"):
            make(math.nan)
    assert Snooze(until=NOW).wake_at(NOW - timedelta(days=1)) == NOW
    assert str(Snooze(5, reason="busy")) == "busy: snoozed, to run in 5s"
    # What the task asked, true also of the attempt that discards the job: "next
    # attempt in 5s" was recorded, and logged, on a job with no attempt left.
    assert str(RetryAfter(5)) == "asked to retry in 5s"


@pytest.mark.django_db
def test_a_snooze_is_lease_checked_and_keeps_its_reason_storable():
    job = JobFactory(executing=True)
    stale = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).update(lease=None, state=S.CANCELLED)
    assert transitions.snooze(stale, NOW, NOW) is False
    assert Job.objects.get(pk=job.pk).state == S.CANCELLED

    fresh = JobFactory(executing=True)
    reason = "nul \x00, lone \ud800, Authorization: Bearer hunter2hunter2, " + "x" * 1000
    assert transitions.snooze(fresh, NOW + timedelta(seconds=1), NOW, reason) is True
    stored = Job.objects.get(pk=fresh.pk)
    assert (stored.state, stored.attempt) == (S.SCHEDULED, 0)
    shown = stored.meta["snoozed"]["reason"]
    assert "hunter2" not in shown and "\x00" not in shown and len(shown) < 700


@pytest.mark.django_db
def test_a_snooze_in_a_zone_postgresql_refuses_is_written_as_its_instant():
    """Python takes UTC offsets up to 23:59 with seconds, PostgreSQL up to 15:59 and
    none: sent as given, the snooze was a DataError that aborted the caller's
    transaction. A naive time is no instant: refused before anything is written."""
    job = JobFactory(executing=True)
    odd = timezone_of(timedelta(hours=20))
    with transaction.atomic():
        with pytest.raises(InvalidOption, match="now must be timezone-aware"):
            transitions.snooze(job, NOW, NOW.replace(tzinfo=None))
        with pytest.raises(InvalidOption, match="until must be timezone-aware"):
            transitions.snooze(job, NOW.replace(tzinfo=None), NOW)
        assert Job.objects.get(pk=job.pk).state == S.EXECUTING  # still usable, unchanged
        until = NOW + timedelta(minutes=5)
        assert transitions.snooze(job, until.astimezone(odd), NOW.astimezone(odd)) is True
    stored = Job.objects.get(pk=job.pk)
    assert (stored.state, stored.run_at) == (S.SCHEDULED, until)
    assert stored.meta["snoozed"]["until"] == until.isoformat()


# -- retry policies -------------------------------------------------------------------


@pytest.mark.django_db
def test_retry_after_sets_the_next_attempt_and_counts_it(worker):
    job = _drained(worker, Job.enqueue(f"{FLOW}.retry_after", args=[120]))
    assert (job.state, job.attempt, job.run_at) == (S.RETRYABLE, 1, NOW + timedelta(seconds=120))
    assert job.errors[0]["error"] == (
        "RetryAfter: the service asked us to wait (asked to retry in 120s)"
    )
    job = _drained(worker, job, job.run_at)
    assert (job.state, job.attempt) == (S.DISCARDED, 2), "max_attempts=2: no retry left"


@pytest.mark.django_db
def test_discard_on_discards_at_the_first_such_error(worker):
    job = _drained(worker, Job.enqueue(f"{FLOW}.discards_on_value_error", args=["value"]))
    assert (job.state, job.attempt) == (S.DISCARDED, 1)
    other = _drained(worker, Job.enqueue(f"{FLOW}.discards_on_value_error", args=["key"]))
    assert other.state == S.RETRYABLE


@pytest.mark.django_db
def test_retry_on_retries_only_those_errors(worker):
    job = _drained(worker, Job.enqueue(f"{FLOW}.retries_on_timeout", args=["timeout"]))
    assert job.state == S.RETRYABLE
    other = _drained(worker, Job.enqueue(f"{FLOW}.retries_on_timeout", args=["key"]))
    assert (other.state, other.attempt) == (S.DISCARDED, 1)
    assert other.errors[0]["error"].startswith("KeyError")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "task, kind, why",
    [
        ("discards_on_value_error", "value", "its task's discard_on"),
        ("retries_on_timeout", "key", "not in its task's retry_on"),
    ],
)
def test_a_discard_with_attempts_left_says_why_in_the_log(worker, caplog, task, kind, why):
    """ "discarded after attempt 1" of a job allowed 20 left a newcomer wondering."""
    with caplog.at_level("WARNING", logger="django_pgjobs"):
        job = _drained(worker, Job.enqueue(f"{FLOW}.{task}", args=[kind]))
    [said] = [r.getMessage() for r in caplog.records if "discarded" in r.getMessage()]
    assert said.startswith(
        f"job {job.pk} ({FLOW}.{task}) discarded after attempt 1 of {job.max_attempts} ({why}): "
    ), said


@pytest.mark.django_db
def test_a_discard_job_with_attempts_left_says_so_in_the_log(worker, caplog):
    @task(name="tests.discards_itself")
    def discards_itself() -> None:
        from django_pgjobs import DiscardJob

        raise DiscardJob("no such user")

    try:
        with caplog.at_level("WARNING", logger="django_pgjobs"):
            job = _drained(worker, Job.enqueue("tests.discards_itself"))
    finally:
        from django_pgjobs import tasks

        tasks._registry.pop("tests.discards_itself", None)
    [said] = [r.getMessage() for r in caplog.records if "discarded" in r.getMessage()]
    assert said == (
        f"job {job.pk} (tests.discards_itself) discarded after attempt 1 of "
        f"{job.max_attempts} (DiscardJob): DiscardJob: no such user"
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "how, delay",
    [("seven", 7.0), ("delta", 60.0), ("raise", None), ("nan", None)],
)
def test_a_backoff_function_sets_the_delay_or_falls_back_to_the_queue(worker, how, delay):
    job = _drained(worker, Job.enqueue(f"{FLOW}.backs_off", args=[how]))
    assert (job.state, job.attempt) == (S.RETRYABLE, 1)
    waited = (job.run_at - NOW).total_seconds()
    if delay is not None:
        assert waited == delay
    else:  # PGJOBS["BACKOFF"]: 2 s, +/- 10%
        assert 1.8 <= waited <= 2.2


@pytest.mark.parametrize(
    "options, field",
    [
        ({"retry_on": "ValueError"}, "retry_on"),
        ({"retry_on": (ValueError, 3)}, "retry_on"),
        ({"discard_on": object}, "discard_on"),
        ({"backoff": 42}, "backoff"),
    ],
)
def test_task_refuses_retry_options_that_are_no_exceptions_or_functions(options, field):
    with pytest.raises(InvalidOption) as refused:
        task(name="tests.never_registered", **options)(lambda: None)
    assert refused.value.field == field


# -- the admin ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_job_page_shows_its_snoozes_and_retry_after(worker, admin_client):
    snoozed = _drained(worker, Job.enqueue(f"{FLOW}.snooze_times", kwargs={"times": 3}))
    page = admin_client.get(detail(snoozed)).content.decode()
    assert "Snoozed until" in page and "waiting, 1 of 3" in page
    assert "no attempt counted" in page
    snoozed = _drained(worker, snoozed, snoozed.run_at)
    page = admin_client.get(detail(snoozed)).content.decode()
    assert "Snoozed 2 times, the last until" in page

    retried = _drained(worker, Job.enqueue(f"{FLOW}.retry_after", args=[60]))
    page = admin_client.get(detail(retried)).content.decode()
    assert "asked to retry in 60s" in page and "Attempt 2 due" in page


@pytest.mark.django_db
def test_the_job_list_finds_snoozed_jobs_and_marks_them(worker, admin_client):
    snoozed = _drained(worker, Job.enqueue(f"{FLOW}.snooze_times", kwargs={"times": 3}))
    plain = JobFactory()
    odd = JobFactory(meta={"snoozed": "not a record"}, state=S.SCHEDULED)  # hostile: no crash
    done = JobFactory(meta={"snoozed": {"count": 2}}, state=S.COMPLETED)

    def listed(query: str) -> tuple[set[int], str]:
        response = admin_client.get(changelist() + query)
        assert response.status_code == 200
        return {job.pk for job in response.context["cl"].result_list}, response.content.decode()

    waiting, page = listed("?snoozed=waiting")
    assert waiting == {snoozed.pk, odd.pk}
    assert page.count("data-pgjobs-snoozed") == 1 and ">snoozed</div>" in page
    assert listed("?snoozed=ever")[0] == {snoozed.pk, odd.pk, done.pk}
    assert plain.pk in listed("")[0]
    assert admin_client.get(changelist() + "?snoozed=nonsense").status_code in (200, 302)


# -- a real worker process ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_runs_a_snoozing_job_to_completion(worker_process, wait):
    jobs = [
        Job.enqueue(f"{FLOW}.snooze_times", kwargs={"times": 2, "seconds": 0.2, "returned": r})
        for r in (False, True)
    ]
    worker = worker_process("--concurrency", "2", env={"PGJOBS_POLL_INTERVAL": "0.2"})
    wait(lambda: all(Job.objects.get(pk=j.pk).state == S.COMPLETED for j in jobs), timeout=30)
    assert worker.stop() == 0
    for job in jobs:
        job.refresh_from_db()
        assert (job.attempt, job.result, job.errors) == (1, 2, [])
        assert job.meta["snoozed"]["count"] == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_wakes_for_a_retry_or_a_snooze_due_before_its_next_poll(worker_process, wait):
    # Nobody notifies a job that becomes due: the worker remembers those it put back.
    retried = Job.enqueue(f"{FLOW}.retry_after", args=[0.3])  # 2 attempts, 0.3 s apart
    snoozed = Job.enqueue(f"{FLOW}.snooze_times", kwargs={"times": 1, "seconds": 0.3})
    worker = worker_process("--concurrency", "2", env={"PGJOBS_POLL_INTERVAL": "60"})
    begin = time.monotonic()
    wait(lambda: Job.objects.get(pk=retried.pk).state == S.DISCARDED, timeout=30)
    wait(lambda: Job.objects.get(pk=snoozed.pk).state == S.COMPLETED, timeout=30)
    assert time.monotonic() - begin < 20  # not the poll's 60 s (start-up included)
    assert worker.stop() == 0
    assert Job.objects.get(pk=retried.pk).attempt == 2
