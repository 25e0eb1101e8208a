"""The scheduler runs maintenance on its own timetable, once per interval across schedulers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from django_pgjobs.housekeeping import RoutineSpec, configured_routines
from django_pgjobs.models import Job, Routine, ScheduleTick
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.states import JobState
from tests.factories import JobFactory, ScheduleFactory, WorkerProcessFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 1, 12, tzinfo=UTC)


def counting(name: str, every: timedelta, runs: list[str]) -> RoutineSpec:
    def action(now: datetime) -> int:
        runs.append(name)
        return 1

    return RoutineSpec(name, every, action)


def test_a_routine_runs_once_per_interval_however_many_schedulers_run():
    runs: list[str] = []
    routine = counting("sweep", timedelta(minutes=5), runs)
    schedulers = [Scheduler(routines=[routine]) for _ in range(3)]
    for offset in (0, 1, 299, 300, 301, 600):
        for scheduler in schedulers:
            scheduler.run_once(START + timedelta(seconds=offset))
    assert runs == ["sweep"] * 3  # at 0 s, 300 s and 600 s
    row = Routine.objects.get(name="sweep")
    assert (row.last_run_at, row.next_run_at, row.last_result) == (
        START + timedelta(seconds=600),
        START + timedelta(seconds=900),
        "1 row(s)",
    )


def test_the_next_wakeup_includes_the_next_routine():
    routine = counting("sweep", timedelta(minutes=5), [])
    report = Scheduler(routines=[routine]).run_once(START)
    assert report.routines == {"sweep": 1}
    assert report.next_wakeup == START + timedelta(minutes=5)


def test_a_shorter_interval_in_settings_applies_at_once():
    runs: list[str] = []
    Scheduler(routines=[counting("sweep", timedelta(hours=1), runs)]).run_once(START)
    Scheduler(routines=[counting("sweep", timedelta(minutes=1), runs)]).run_once(
        START + timedelta(minutes=2)
    )
    assert runs == ["sweep", "sweep"]


def test_a_failing_routine_is_recorded_and_the_others_still_run():
    runs: list[str] = []

    def broken(now: datetime) -> int:
        raise RuntimeError("disk full")

    scheduler = Scheduler(
        routines=[
            RoutineSpec("broken", timedelta(minutes=1), broken),
            counting("ok", timedelta(minutes=1), runs),
        ]
    )
    assert scheduler.run_once(START).routines == {"ok": 1}
    assert Routine.objects.get(name="broken").last_result == "failed: RuntimeError: disk full"


def test_prune_and_rescue_are_on_by_default_and_configurable(settings):
    assert [(r.name, r.interval) for r in configured_routines()] == [
        ("rescue", timedelta(seconds=30)),
        ("prune", timedelta(seconds=300)),
    ]
    settings.PGJOBS = {**settings.PGJOBS, "PRUNE_INTERVAL": None, "RESCUE_INTERVAL": 10}
    assert [(r.name, r.interval) for r in configured_routines()] == [
        ("rescue", timedelta(seconds=10))
    ]


def test_the_default_routines_prune_old_jobs_and_ticks_and_rescue_lost_jobs(settings):
    settings.PGJOBS = {**settings.PGJOBS, "PRUNE_AFTER": 3600}
    now = datetime.now(UTC)
    old = JobFactory(completed=True, finished_at=now - timedelta(hours=2))
    recent = JobFactory(completed=True, finished_at=now - timedelta(minutes=5))
    schedule = ScheduleFactory()
    ScheduleTick.objects.create(schedule=schedule, fire_at=now, fired_at=now - timedelta(hours=2))
    kept_tick = ScheduleTick.objects.create(
        schedule=schedule, fire_at=now + timedelta(minutes=1), fired_at=now
    )
    dead = WorkerProcessFactory(heartbeat_at=now - timedelta(hours=1))
    lost = JobFactory(executing=True, worker=dead)

    report = Scheduler().run_once(now)

    assert report.routines == {"prune": 2, "rescue": 1}
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, lost.pk}
    assert not Job.objects.filter(pk=old.pk).exists()
    assert list(ScheduleTick.objects.values_list("pk", flat=True)) == [kept_tick.pk]
    lost.refresh_from_db()
    assert lost.state != JobState.EXECUTING
