"""A connector's concurrency limit holds across connections and worker processes
(also behind PgBouncer in transaction mode: `./dev test` runs this file through it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import Job, db, transitions
from django_pgjobs.connectors.runtime import lock_key, release_slot, take_slot
from django_pgjobs.models import ConnectorSlot
from django_pgjobs.states import JobState
from tests.factories import ConnectorFactory, JobFactory

CALL = "django_pgjobs.connectors.tasks.call"


def occupy(connector: object, slot: int = 0) -> Job:
    """A job that executes holding ``slot`` of ``connector``, as a worker elsewhere."""
    job = JobFactory(executing=True)
    ConnectorSlot.objects.create(connector=connector, slot=slot, job_id=job.pk, lease=job.lease)
    return job


@pytest.mark.django_db(transaction=True)
def test_slots_are_shared_by_all_connections_and_freed_when_their_job_stops_executing(
    second_connection,
):
    hook = ConnectorFactory(name="hook", concurrency=2)
    first, second, third = (JobFactory(executing=True) for _ in range(3))

    assert take_slot(hook.pk, 2, first.pk, first.lease) == 0
    lock = db.statement("connector_lock_slots")
    take = db.statement("connector_take_slot")
    with second_connection.transaction():  # another worker's connection
        second_connection.execute(lock, {"key": lock_key(hook.pk)})
        row = second_connection.execute(
            take, {"connector": hook.pk, "slots": 2, "job": second.pk, "lease": second.lease}
        ).fetchone()
    assert row == (1,)
    assert take_slot(hook.pk, 2, third.pk, third.lease) is None

    # Its worker died and the job was rescued: no release ran, yet the slot is free.
    Job.objects.filter(pk=first.pk).update(state=JobState.AVAILABLE, lease=None, worker=None)
    assert take_slot(hook.pk, 2, third.pk, third.lease) == 0
    assert ConnectorSlot.objects.filter(connector=hook).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_released_slot_can_be_taken_again_and_nothing_stays_in_the_session(caplog):
    hook = ConnectorFactory(name="hook", concurrency=1)
    job, other = JobFactory(executing=True), JobFactory(executing=True)
    assert take_slot(hook.pk, 1, job.pk, job.lease) == 0
    assert take_slot(hook.pk, 1, other.pk, other.lease) is None, "one slot, one holder"
    release_slot(hook.pk, 0, job.lease)
    release_slot(hook.pk, 0, job.lease)
    assert "was no longer held" in caplog.text
    assert take_slot(hook.pk, 1, other.pk, other.lease) == 0
    with connection.cursor() as cursor:  # nothing a pooler in transaction mode would lose
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_connector_is_busy_waits_without_using_an_attempt(worker):
    hook = ConnectorFactory(name="hook", concurrency=1)
    holder = occupy(hook)
    job = Job.enqueue(CALL, connector="hook")
    now = timezone.now()

    assert worker.drain(now=now) == {"scheduled": 1}
    job.refresh_from_db()
    assert (job.state, job.attempt, job.errors, job.lease) == (JobState.SCHEDULED, 0, [], None)
    assert job.meta["snoozed"]["reason"] == "connector 'hook' is at its concurrency limit"
    assert job.run_at == now + timedelta(seconds=1.0)  # CONNECTOR_BUSY_DELAY
    assert worker.drain(now=now) == {}, "it waits for its run_at"

    Job.objects.filter(pk=holder.pk).update(state=JobState.COMPLETED, lease=None, worker=None)
    assert worker.drain(now=job.run_at) == {"retryable": 1}  # ran (port 9 refuses)
    job.refresh_from_db()
    assert job.attempt == 1
    assert not ConnectorSlot.objects.filter(job_id=job.pk).exists(), "released after the run"


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
