"""A connector's concurrency limit holds across connections and worker processes."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import Job, db, transitions
from django_pgjobs.connectors.runtime import release_slot, slot_key, take_slot
from django_pgjobs.states import JobState
from tests.conftest import wait_until
from tests.factories import ConnectorFactory, JobFactory

CALL = "django_pgjobs.connectors.tasks.call"


def advisory_locks_held(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_slots_are_shared_by_all_connections_and_freed_when_one_closes(second_connection):
    base = slot_key(7, 0)
    statement = db.statement("connector_take_slot")
    other = psycopg.connect(**db.connection_params(), autocommit=True)

    assert take_slot(7, 2) is not None
    theirs = second_connection.execute(statement, {"slots": 2, "base": base}).fetchone()
    assert theirs is not None and advisory_locks_held(second_connection) == 1
    assert other.execute(statement, {"slots": 2, "base": base}).fetchone() is None

    second_connection.close()  # a worker that dies gives its slot back with its connection
    # The server ends the closed session (and frees its locks) a moment later.
    wait_until(lambda: other.execute(statement, {"slots": 2, "base": base}).fetchone(), timeout=5)
    other.close()


@pytest.mark.django_db(transaction=True)
def test_a_released_slot_can_be_taken_again():
    key = take_slot(8, 1)
    assert key is not None and take_slot(8, 1) is not None, "session locks are re-entrant"
    release_slot(key)
    release_slot(key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_connector_is_busy_waits_without_using_an_attempt(worker, second_connection):
    hook = ConnectorFactory(name="hook", concurrency=1)
    second_connection.execute("SELECT pg_advisory_lock(%s)", [slot_key(hook.pk, 0)])
    job = Job.enqueue(CALL, connector="hook")
    now = timezone.now()

    assert worker.drain(now=now) == {"scheduled": 1}
    job.refresh_from_db()
    assert (job.state, job.attempt, job.errors, job.lease) == (JobState.SCHEDULED, 0, [], None)
    assert job.meta["snoozed"]["reason"] == "connector 'hook' is at its concurrency limit"
    assert job.run_at == now + timedelta(seconds=1.0)  # CONNECTOR_BUSY_DELAY
    assert worker.drain(now=now) == {}, "it waits for its run_at"

    second_connection.execute("SELECT pg_advisory_unlock_all()")
    assert worker.drain(now=job.run_at) == {"retryable": 1}  # ran (port 9 refuses)
    job.refresh_from_db()
    assert job.attempt == 1


@pytest.mark.django_db
def test_snooze_is_lease_checked():
    job = JobFactory(executing=True)
    stale = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).update(lease=None, state=JobState.CANCELLED)
    assert transitions.snooze(stale, timezone.now()) is False
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_never_exceed_the_connector_limit(worker_process, http_peer, wait):
    ConnectorFactory(name="hook", config={"url": http_peer.url}, concurrency=2)
    http_peer.delay = 0.3
    Job.enqueue_many(
        [{"task": CALL, "kwargs": {"payload": n}, "connector": "hook"} for n in range(8)]
    )

    fast_poll = {"PGJOBS_POLL_INTERVAL": "0.2"}  # snoozed jobs come back by polling
    workers = [worker_process("--concurrency", "4", env=fast_poll) for _ in range(2)]
    wait(lambda: Job.objects.filter(state=JobState.COMPLETED).count() == 8, timeout=60)
    assert [w.stop() for w in workers] == [0, 0]

    assert len(http_peer.received) == 8
    assert http_peer.max_in_flight == 2
    assert set(Job.objects.values_list("state", "attempt")) == {(JobState.COMPLETED, 1)}
