"""Connector backpressure: a 429/503 with Retry-After makes every job using the
connector wait until then, without an attempt counted (issue 20, item 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from django.utils import timezone

from django_pgjobs import Job
from django_pgjobs.connectors.http import MAX_RETRY_AFTER, retry_after
from django_pgjobs.models import Connector
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from tests.factories import ConnectorFactory

pytestmark = pytest.mark.django_db

CALL = "django_pgjobs.connectors.tasks.call"


def test_retry_after_is_read_as_seconds_or_a_date_and_capped():
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0
    assert retry_after("99999999") == MAX_RETRY_AFTER
    for odd in (None, "", "soon", "-5", "1.5", "\x00"):
        assert retry_after(odd) is None


def test_a_throttle_is_counted_from_when_it_is_written_not_from_its_transaction_start():
    from django.db import connection, transaction

    from django_pgjobs.connectors.http import throttle

    ConnectorFactory(name="api")
    with transaction.atomic(), connection.cursor() as cursor:
        # now() is when this transaction began, already past: a task's own
        # transaction may have begun long before the answer.
        cursor.execute("SELECT clock_timestamp()")
        [(before,)] = cursor.fetchall()
        throttle("api", 120)
    assert Connector.objects.get().throttled_until >= before + timedelta(seconds=120)


def test_a_throttle_holds_when_the_task_rolls_its_own_transaction_back(http_peer):
    ConnectorFactory(name="api", config={"url": http_peer.url})
    http_peer.status, http_peer.extra_headers = 429, {"Retry-After": "120"}
    jobs = [
        Job.enqueue("tests.tasks_for_tests.call_in_a_transaction", connector="api")
        for _ in range(2)
    ]
    before = timezone.now()
    outcomes = Worker(concurrency=1).drain()
    assert len(http_peer.received) == 1, "the second job waited without calling"
    assert outcomes == {"scheduled": 2}
    stored = Connector.objects.get()
    assert stored.throttled_until is not None
    assert stored.throttled_until >= before + timedelta(seconds=119)
    for job in jobs:
        job.refresh_from_db()
        assert job.state == JobState.SCHEDULED and job.attempt == 0


def test_a_throttle_holds_when_a_job_naming_no_connector_rolls_it_back(http_peer):
    # A task may load a connector itself (get_connector): the job names none.
    ConnectorFactory(name="api", config={"url": http_peer.url})
    http_peer.status, http_peer.extra_headers = 429, {"Retry-After": "120"}
    before = timezone.now()
    Job.enqueue("tests.tasks_for_tests.call_named_in_a_transaction", args=["api"])
    assert Worker(concurrency=1).drain() == {"scheduled": 1}
    throttled_until = Connector.objects.get().throttled_until
    assert throttled_until is not None and throttled_until >= before + timedelta(seconds=119)


def test_a_throttle_written_again_counts_from_the_answer_not_from_the_attempts_end(http_peer):
    # The throttle written again once the task let the exception go counted the whole
    # Retry-After from then: a task that held it (or did slow work after it) kept the
    # connector throttled, and its job snoozed, longer than the service asked.
    ConnectorFactory(name="api", config={"url": http_peer.url})
    http_peer.status, http_peer.extra_headers = 429, {"Retry-After": "120"}
    job = Job.enqueue("tests.tasks_for_tests.linger_after_a_throttle", args=[2], connector="api")
    before = timezone.now()
    assert Worker(concurrency=1).drain() == {"scheduled": 1}
    answered_by = timezone.now() - timedelta(seconds=2)  # the task held it 2 s after
    throttled_until = Connector.objects.get().throttled_until
    assert throttled_until is not None
    assert before + timedelta(seconds=119) <= throttled_until
    assert throttled_until <= answered_by + timedelta(seconds=121)
    job.refresh_from_db()
    assert job.run_at <= answered_by + timedelta(seconds=121)


def test_a_throttle_is_written_again_on_the_connector_that_answered_not_the_jobs(http_peer):
    # A task may call a connector other than its own: the throttle written again once
    # the task is done is the one that answered's, not the job's connector's.
    ConnectorFactory(name="api", config={"url": http_peer.url})
    ConnectorFactory(name="other", config={"url": http_peer.url})
    http_peer.status, http_peer.extra_headers = 429, {"Retry-After": "120"}
    Job.enqueue("tests.tasks_for_tests.call_another_connector", args=["other"], connector="api")
    assert Worker(concurrency=1).drain() == {"scheduled": 1}
    throttled = dict(Connector.objects.values_list("name", "throttled_until"))
    assert throttled["other"] is not None
    assert throttled["api"] is None, "the job's own connector never answered"


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_answer_makes_every_job_of_the_connector_wait(http_peer, admin_client, status):
    ConnectorFactory(name="api", config={"url": http_peer.url})
    http_peer.status, http_peer.extra_headers = status, {"Retry-After": "120"}
    jobs = [Job.enqueue(CALL, kwargs={"payload": n}, connector="api") for n in range(3)]
    before = timezone.now()
    outcomes = Worker(concurrency=1).drain()
    assert len(http_peer.received) == 1, "the others waited without calling"
    stored = Connector.objects.get()
    assert stored.throttled_until >= before + timedelta(seconds=119)
    for job in jobs:
        job.refresh_from_db()
        assert job.state == JobState.SCHEDULED and job.attempt == 0, (job.state, job.attempt)
        assert job.run_at >= before + timedelta(seconds=118)
        assert (
            "answered" in job.meta["snoozed"]["reason"]
            or "throttled until" in (job.meta["snoozed"]["reason"])
        )
    assert outcomes == {"scheduled": 3}
    # The admin shows it.
    page = admin_client.get("/admin/pgjobs/connector/").content.decode()
    assert "until <time" in page
    # Once the time has come, the jobs run (the service is fine again).
    http_peer.status, http_peer.extra_headers = 200, {}
    Connector.objects.update(throttled_until=timezone.now() - timedelta(seconds=1))
    later = Worker(concurrency=1).drain(now=timezone.now() + timedelta(seconds=121))
    assert later == {"completed": 3}


def test_a_429_without_retry_after_is_an_ordinary_failure(http_peer):
    ConnectorFactory(name="api", config={"url": http_peer.url})
    http_peer.status = 429
    job = Job.enqueue(CALL, kwargs={"payload": 1}, connector="api")
    Worker(concurrency=1).drain()
    job.refresh_from_db()
    assert job.state == JobState.RETRYABLE and job.attempt == 1
    assert Connector.objects.get().throttled_until is None


@pytest.mark.parametrize("until", ["'9999-12-30 00:00:00+00'", "now() + interval '2 years'"])
def test_a_throttle_further_ahead_than_any_answer_sets_is_looked_at_again_hourly(until):
    """Written by SQL (or restored from elsewhere): a wait past the year a snooze may
    last made every job of the connector fail an attempt with InvalidOption ("seconds
    must be ... at most 31536000"), until it was discarded. It waits as long as any
    Retry-After is obeyed, and then looks again."""
    from django.db import connection

    ConnectorFactory(name="api")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pgjobs_connector SET throttled_until = {until}")
    job = Job.enqueue(CALL, kwargs={"payload": 1}, connector="api")
    before = timezone.now()
    assert Worker(concurrency=1).drain() == {"scheduled": 1}
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED and job.attempt == 0 and job.errors == []
    wait = (job.run_at - before).total_seconds()
    assert MAX_RETRY_AFTER - 5 < wait < MAX_RETRY_AFTER + 5, wait
    assert "is throttled until" in job.meta["snoozed"]["reason"]
