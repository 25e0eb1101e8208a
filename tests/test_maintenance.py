"""Rescue of jobs held by dead workers, and pruning of finished jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_pgjobs import inline, maintenance, transitions
from django_pgjobs.models import Job, WorkerProcess
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from tests.factories import JobFactory, WorkerProcessFactory

pytestmark = pytest.mark.django_db


def held_by(worker, **kwargs):
    return JobFactory(executing=True, worker=worker, **kwargs)


def test_jobs_of_a_worker_with_a_stale_heartbeat_are_rescued_without_counting_the_attempt():
    now = timezone.now()
    dead = WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5))
    queued_at = now - timedelta(minutes=10)
    job = held_by(dead, max_attempts=3, run_at=queued_at, meta={"pipeline": "p"})

    assert maintenance.rescue_orphaned(now, stale_after=60) == 1

    job.refresh_from_db()
    # Available at its old place in the queue, its attempt given back, one crash more.
    assert job.state == JobState.AVAILABLE and job.attempt == 0
    assert job.run_at == queued_at and job.lease is None and job.worker_id is None
    assert job.meta == {"pipeline": "p", "crashes": 1}
    assert job.errors[-1]["error"].startswith(f"WorkerLost: worker {dead.pk} was lost")
    assert "not counted" in job.errors[-1]["error"]
    assert not WorkerProcess.objects.filter(pk=dead.pk).exists()


def test_a_caller_whose_clock_lags_the_database_takes_no_live_workers_jobs():
    # A heartbeat far ahead is no live worker's; but ahead of the database's clock,
    # not only of the caller's: a scheduler host stepped back by minutes (or a frozen
    # test clock) would otherwise take back every running job, to be run twice.
    live = WorkerProcessFactory(heartbeat_at=timezone.now())
    job = held_by(live)
    lagging = timezone.now() - timedelta(minutes=10)
    assert maintenance.rescue_orphaned(lagging, stale_after=60) == 0
    job.refresh_from_db()
    assert job.state == JobState.EXECUTING and WorkerProcess.objects.filter(pk=live.pk).exists()


def test_a_job_lost_more_than_max_attempts_times_is_discarded():
    now = timezone.now()
    dead = WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5))
    job = held_by(dead, max_attempts=2, meta={"crashes": 2})
    maintenance.rescue_orphaned(now, stale_after=60)
    job.refresh_from_db()
    assert job.state == JobState.DISCARDED and job.finished_at == now
    assert job.attempt == 1 and job.meta["crashes"] == 3
    assert "more than max_attempts" in job.errors[-1]["error"]


@pytest.mark.parametrize(
    "meta", [[], "text", {"crashes": "many"}, {"crashes": -4}, {"crashes": 1e30}]
)
def test_rescue_survives_whatever_meta_holds(meta):
    now = timezone.now()
    job = held_by(WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5)))
    Job.objects.filter(pk=job.pk).update(meta=meta)
    assert maintenance.rescue_orphaned(now, stale_after=60) == 1
    job.refresh_from_db()
    assert isinstance(job.meta["crashes"], int)


def test_the_jobs_of_workers_known_dead_are_rescued_at_once():
    now = timezone.now()
    dead, alive = WorkerProcessFactory(heartbeat_at=now), WorkerProcessFactory(heartbeat_at=now)
    lost, kept = held_by(dead), held_by(alive)
    assert maintenance.rescue_orphaned(now, stale_after=60, dead_workers=[dead.pk]) == 1
    assert Job.objects.get(pk=lost.pk).state == JobState.AVAILABLE
    assert Job.objects.get(pk=kept.pk).state == JobState.EXECUTING
    assert list(WorkerProcess.objects.values_list("pk", flat=True)) == [alive.pk]


def test_jobs_of_live_workers_are_left_alone():
    now = timezone.now()
    alive = WorkerProcessFactory(heartbeat_at=now - timedelta(seconds=10))
    job = held_by(alive)
    assert maintenance.rescue_orphaned(now, stale_after=60) == 0
    assert Job.objects.get(pk=job.pk).state == JobState.EXECUTING


def test_jobs_whose_worker_row_is_gone_are_rescued():
    job = held_by(WorkerProcessFactory())
    WorkerProcess.objects.all().delete()
    assert maintenance.rescue_orphaned(timezone.now(), stale_after=60) == 1
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


def test_jobs_claimed_without_a_worker_row_are_rescued_once_old():
    now = timezone.now()
    fresh = JobFactory(executing=True, attempted_at=now - timedelta(seconds=5))
    old = JobFactory(executing=True, attempted_at=now - timedelta(minutes=5))
    assert maintenance.rescue_orphaned(now, stale_after=60) == 1
    assert Job.objects.get(pk=fresh.pk).state == JobState.EXECUTING
    assert Job.objects.get(pk=old.pk).state == JobState.AVAILABLE


def test_the_lost_worker_can_not_write_after_the_rescue():
    now = timezone.now()
    job = held_by(WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5)))
    stale_copy = Job.objects.get(pk=job.pk)
    maintenance.rescue_orphaned(now, stale_after=60)
    assert not transitions.complete(stale_copy, result="late")
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


# A dead worker's row as SQL may leave it: 20 MB of failing, queues no list, nested
# deeper than Python's JSON reader goes.
HUGE_ROW = """
UPDATE pgjobs_workerprocess
SET failing = to_jsonb(repeat('x', 20000000)),
    queues = (repeat('[', 5000) || repeat(']', 5000))::jsonb
WHERE id = %s
"""


@pytest.mark.parametrize("listened", [False, True], ids=["fast", "a-site-listens"])
def test_rescue_deletes_dead_worker_rows_without_reading_their_json(listened):
    """Not their queues nor failing: a row written by SQL may hold anything there. Even
    when a site's post_delete receiver makes Django fetch the rows it deletes."""
    now = timezone.now()
    dead = WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5))
    job = held_by(dead)
    with connection.cursor() as cursor:
        cursor.execute(HUGE_ROW, [dead.pk])
    deleted: list[tuple[str, set[str]]] = []

    def receiver(sender, instance, **kwargs):
        deleted.append((str(instance), instance.get_deferred_fields()))

    if listened:  # as an audit app does, for every model
        post_delete.connect(receiver, weak=False)
    try:
        with CaptureQueriesContext(connection) as queries:
            assert maintenance.rescue_orphaned(now, stale_after=60) == 1
    finally:
        post_delete.disconnect(receiver)
    read = [q["sql"] for q in queries if "pgjobs_workerprocess" in q["sql"]]
    assert not [sql for sql in read if '"failing"' in sql or '"queues"' in sql], read
    assert not WorkerProcess.objects.filter(pk=dead.pk).exists()
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE
    if listened:
        # The rest is read: a receiver may name the row.
        assert deleted == [(f"worker {dead.pk} (test-host:{dead.pid})", {"failing", "queues"})]


def test_rescue_names_the_worker_rows_it_removes_the_first_ten(caplog):
    """ "removed 12 lost worker row(s)" said not which: their ids, hosts and pids, the
    first ten, the others counted; a host written by SQL escaped, and their JSON unread
    (a site's post_delete receiver listening)."""
    now = timezone.now()
    dead = [
        WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5), host=f"web-{n}", pid=n)
        for n in range(12)
    ]
    WorkerProcess.objects.filter(pk=dead[0].pk).update(host="web\nforged line")
    with connection.cursor() as cursor:
        cursor.execute(HUGE_ROW, [dead[1].pk])
    alive = WorkerProcessFactory(heartbeat_at=now)
    post_delete.connect(_listening, sender=WorkerProcess, weak=False)
    try:
        with CaptureQueriesContext(connection) as queries:
            maintenance.rescue_orphaned(now, stale_after=60)
    finally:
        post_delete.disconnect(_listening, sender=WorkerProcess)
    [line] = [r.getMessage() for r in caplog.records if "lost worker row" in r.getMessage()]
    named = ", ".join(
        [f"worker {dead[0].pk} (web\\nforged line:0)"]
        + [f"worker {w.pk} (web-{n}:{n})" for n, w in enumerate(dead[1:10], 1)]
    )
    assert line == (
        f"removed 12 lost worker row(s): {named} and 2 more; "
        "returned 0 job(s) they held to the queue"
    )
    read = [q["sql"] for q in queries if "pgjobs_workerprocess" in q["sql"]]
    assert not [sql for sql in read if '"failing"' in sql or '"queues"' in sql], read
    assert list(WorkerProcess.objects.values_list("pk", flat=True)) == [alive.pk]


def _listening(sender, instance, **kwargs):
    """A site's post_delete receiver (an audit app's): Django fetches the rows it deletes."""


def stop_a_worker() -> None:
    worker = Worker(["default"], concurrency=1)
    worker.start()
    worker.shutdown()


def run_inline() -> None:
    inline.run_due(["default"])


@pytest.mark.django_db(transaction=True)  # a worker's shutdown closes its connection
@pytest.mark.parametrize("stop", [stop_a_worker, run_inline], ids=["worker", "inline"])
def test_a_process_deletes_its_own_row_without_reading_its_json(stop):
    """As rescue does a dead worker's: even when a site's post_delete receiver makes
    Django fetch the row, its queues and failing, which SQL may have written with
    anything, are left unread."""

    def written_by_sql(sender, instance, created, **kwargs):
        if created:
            with connection.cursor() as cursor:
                cursor.execute(HUGE_ROW, [instance.pk])

    deleted: list[set[str]] = []

    def receiver(sender, instance, **kwargs):
        deleted.append(instance.get_deferred_fields())

    post_save.connect(written_by_sql, sender=WorkerProcess, weak=False)
    post_delete.connect(receiver, sender=WorkerProcess, weak=False)
    try:
        with CaptureQueriesContext(connection) as queries:
            stop()
    finally:
        post_save.disconnect(written_by_sql, sender=WorkerProcess)
        post_delete.disconnect(receiver, sender=WorkerProcess)
    read = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
    read = [sql for sql in read if "pgjobs_workerprocess" in sql]
    assert read and not [sql for sql in read if '"failing"' in sql or '"queues"' in sql], read
    assert deleted == [{"failing", "queues"}]
    assert not WorkerProcess.objects.exists()


def test_prune_deletes_only_old_finished_jobs_in_batches():
    now = timezone.now()
    old = now - timedelta(days=10)
    for trait in ("completed", "discarded", "cancelled"):
        JobFactory.create_batch(5, **{trait: True}, finished_at=old)
    recent = JobFactory(completed=True, finished_at=now)
    active = [JobFactory(), JobFactory(retryable=True), JobFactory(executing=True)]

    assert maintenance.prune_finished(now, older_than=timedelta(days=7), batch_size=4) == 15

    remaining = set(Job.objects.values_list("pk", flat=True))
    assert remaining == {recent.pk, *(job.pk for job in active)}
