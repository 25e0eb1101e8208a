"""Worker and scheduler process rows are alive by their heartbeat, one rule for all
(``liveness.alive``): no older than their stale limit, and no further ahead of the
database's clock, which stamps every heartbeat. A row written by SQL in the year
9999 is no running process's: rescue already took it for dead; the admin, health
and the scheduler's start took it for alive for ever."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import health, liveness, stats
from django_pgjobs.admin.dashboard import alive_workers
from django_pgjobs.admin.schedules import no_scheduler_warning
from django_pgjobs.models import Schedule, SchedulerProcess, WorkerProcess
from django_pgjobs.scheduler import STALE_AFTER, Scheduler
from tests.factories import ScheduleFactory, WorkerProcessFactory

pytestmark = pytest.mark.django_db

FAR_AHEAD = "9999-12-30 00:00:00+00"


def ahead(table: str, pk: int, when: str = FAR_AHEAD) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET heartbeat_at = %s WHERE id = %s", [when, pk])


def late_schedule() -> Schedule:
    late = ScheduleFactory(name="nightly")
    Schedule.objects.filter(pk=late.pk).update(next_fire_at=timezone.now() - timedelta(minutes=5))
    return late


def test_a_scheduler_row_from_the_future_hides_no_late_schedule():
    late = late_schedule()
    process = SchedulerProcess.objects.create(host="sql", pid=1)
    ahead("pgjobs_schedulerprocess", process.pk)
    warning = no_scheduler_warning()
    assert warning is not None and warning.startswith("No scheduler is running"), warning
    cause = health.late_cause(
        {"name": late.name, "cron": late.cron, "timezone": late.timezone},
        timezone.now(),
        "default",
    )
    assert cause.startswith("no scheduler is running"), cause
    assert "a scheduler runs" not in cause


def test_a_scheduler_row_just_ahead_of_the_clock_still_counts():
    """Within the stale limit either way: a clock a little behind the database's (the
    web host's, a caller's ``now``) sees a live scheduler's fresh heartbeat ahead."""
    late_schedule()
    process = SchedulerProcess.objects.create(host="live", pid=2)
    SchedulerProcess.objects.filter(pk=process.pk).update(
        heartbeat_at=timezone.now() + STALE_AFTER / 2
    )
    assert no_scheduler_warning() is None


def test_a_starting_scheduler_deletes_rows_from_the_future_as_it_does_forgotten_ones():
    future = SchedulerProcess.objects.create(host="sql", pid=1)
    ahead("pgjobs_schedulerprocess", future.pk)
    live = SchedulerProcess.objects.create(host="live", pid=2)
    scheduler = Scheduler(routines=[])
    scheduler.start()
    try:
        left = set(SchedulerProcess.objects.values_list("pk", flat=True))
        assert future.pk not in left
        assert {live.pk, scheduler.record.pk} <= left
    finally:
        scheduler.shutdown()


def test_a_worker_row_from_the_future_is_not_counted_alive():
    WorkerProcessFactory()
    future = WorkerProcessFactory()
    ahead("pgjobs_workerprocess", future.pk)
    assert list(alive_workers("default").values_list("pk", flat=True)) != [future.pk]
    assert alive_workers("default").count() == 1
    assert stats.worker_summary() == {"live": 1, "stale": 1}
    shown = {row["id"]: row["alive"] for row in stats.workers()}
    assert shown[future.pk] is False


def test_alive_is_one_rule_for_both_kinds_of_rows():
    now = timezone.now()
    limit = timedelta(seconds=60)
    assert liveness.is_alive(now, now, limit)
    assert liveness.is_alive(now - limit, now, limit)
    assert liveness.is_alive(now + limit, now, limit)
    assert not liveness.is_alive(now - limit * 2, now, limit)
    assert not liveness.is_alive(now + limit * 2, now, limit)
    # Near the ends of time: no OverflowError, and the year 9999 is still not alive.
    far = WorkerProcess(heartbeat_at=now).heartbeat_at.replace(year=9999, month=12, day=30)
    assert not liveness.is_alive(far, now, limit)
    assert liveness.is_alive(far, far, timedelta.max)


def test_the_admin_shows_a_heartbeat_from_the_future_as_stale(admin_client):
    """It read "0s ago", live: the age of a heartbeat ahead is below zero."""
    from django.urls import reverse

    future = SchedulerProcess.objects.create(host="sql", pid=1)
    ahead("pgjobs_schedulerprocess", future.pk)
    page = admin_client.get(reverse("admin:pgjobs_schedulerprocess_changelist"))
    text = page.content.decode()
    assert "ahead (stale)" in text and "0s ago" not in text
    worker = WorkerProcessFactory()
    ahead("pgjobs_workerprocess", worker.pk)
    page = admin_client.get(reverse("admin:pgjobs_workerprocess_changelist"))
    assert "ahead (stale)" in page.content.decode()
