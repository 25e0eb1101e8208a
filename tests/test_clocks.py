"""Hosts whose clocks are off: cron fires by the database's clock, skews are measured
and shown, and heartbeats are judged by the database's clock."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from django_pgjobs import clocks, maintenance
from django_pgjobs.models import Job, Schedule, SchedulerProcess, ScheduleTick, WorkerProcess
from django_pgjobs.scheduler import Scheduler
from tests.conftest import ROOT
from tests.conftest import test_database_env as child_database_env
from tests.factories import ScheduleFactory

pytestmark = pytest.mark.django_db(transaction=True)


def fast(seconds: float):
    return lambda: timezone.now() + timedelta(seconds=seconds)


def test_a_database_clock_measures_a_host_clock_45_s_fast_and_tells_the_databases_time():
    clock = clocks.DatabaseClock(host_clock=fast(45))
    assert clock.measure() == pytest.approx(45, abs=0.5)
    assert abs((clock() - clocks.database_now()).total_seconds()) < 0.5
    assert clock.uncertainty is not None and clock.uncertainty < 0.5


def tick_ahead() -> tuple[datetime, datetime]:
    """The database's time now, and a minute's start at least 20 s after it: time
    enough to start a process before the tick is due."""
    db_now = clocks.database_now()
    return db_now, (db_now + timedelta(seconds=80)).replace(second=0, microsecond=0)


def test_a_scheduler_on_a_fast_host_fires_nothing_early():
    db_now, tick = tick_ahead()
    schedule = ScheduleFactory(cron="* * * * *")
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=tick)
    # The host's clock is already past the tick; the database's is not.
    ahead = (tick - db_now).total_seconds() + 5
    scheduler = Scheduler(routines=[], clock=clocks.DatabaseClock(host_clock=fast(ahead)))
    assert scheduler.run_once().fired == []
    assert not ScheduleTick.objects.exists()
    # The same host, uncorrected, would have fired it early: what the clock fixes.
    assert [f.fire_at for f in Scheduler(routines=[], clock=fast(ahead)).fire_due()] == [tick]


def run_scheduler_once(offset: float) -> str:
    env = {**child_database_env(), "PGJOBS_TEST_CLOCK_OFFSET": str(offset)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runscheduler", "--once", "--no-maintenance"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_runscheduler_on_a_host_fast_waits_for_the_databases_clock():
    db_now, tick = tick_ahead()
    schedule = ScheduleFactory(cron="* * * * *")
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=tick)
    offset = (tick - db_now).total_seconds() + 5  # its clock says the tick is 5 s old
    output = run_scheduler_once(offset)
    assert "runscheduler --once: nothing was due" in output, output
    assert not ScheduleTick.objects.exists()


def test_a_scheduler_process_on_a_slow_host_fires_a_due_tick_at_once(wait):
    """The loop, in a real process whose clock is behind: the tick that is due by the
    database's clock fires now, not when the host's clock gets there."""
    db_now = clocks.database_now()
    tick = db_now.replace(second=0, microsecond=0)  # the latest tick, due now
    schedule = ScheduleFactory(cron="* * * * *")
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=tick)
    behind = (db_now - tick).total_seconds() + 30  # its clock shows 30 s before the tick
    env = {**child_database_env(), "PGJOBS_TEST_CLOCK_OFFSET": str(-behind)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runscheduler", "--no-maintenance"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        fired = wait(lambda: ScheduleTick.objects.filter(schedule=schedule).first(), timeout=20)
        seen_at = clocks.database_now()
        # The tick, or the next one if a minute began while the process started (one
        # job for both: catch-up fires the latest due tick).
        assert fired.fire_at in (tick, tick + timedelta(minutes=1))
        # Fired and stamped by the database's clock, well before the host's reaches it.
        assert seen_at - tick < timedelta(seconds=behind - 5)
        assert abs((seen_at - fired.fired_at).total_seconds()) < 10
        job = Job.objects.get(pk=fired.job_id)
        assert job.run_at <= seen_at  # due at once, for workers on the database's clock
        row = wait(lambda: SchedulerProcess.objects.filter(clock_skew__isnull=False).first())
        assert row.clock_skew == pytest.approx(-behind, abs=1.0)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "behind the database's" in output, output
    assert not SchedulerProcess.objects.exists(), "a stopping scheduler removes its row"


def test_a_worker_on_a_fast_host_reports_its_skew_and_is_not_taken_for_dead(worker_process, wait):
    process = worker_process(
        env={"PGJOBS_TEST_CLOCK_OFFSET": "90", "PGJOBS_HEARTBEAT_INTERVAL": "0.3"}
    )
    row = wait(lambda: WorkerProcess.objects.filter(clock_skew__isnull=False).first(), 20)
    assert row.clock_skew == pytest.approx(90, abs=1.0)
    # Heartbeats are stamped by the database: a rescue by its clock sees a live worker
    # (by the host's clock, its last heartbeat would be 90 s old: past the 60 s limit).
    assert abs((clocks.database_now() - row.heartbeat_at).total_seconds()) < 5
    assert maintenance.rescue_orphaned(clocks.database_now()) == 0
    assert WorkerProcess.objects.filter(pk=row.pk).exists()
    assert process.stop() == 0, process.output()
    assert "90.0 s ahead of the database's" in process.output()


def test_the_admin_shows_each_process_clock_skew(admin_client):
    now = timezone.now()
    WorkerProcess.objects.create(host="w", pid=1, clock_skew=45.04, heartbeat_at=now)
    SchedulerProcess.objects.create(host="s", pid=2, clock_skew=-3.2, heartbeat_at=now)
    page = admin_client.get(reverse("admin:pgjobs_workerprocess_changelist")).content.decode()
    assert "45.0 s ahead" in page and "pgjobs-stale" in page
    page = admin_client.get(reverse("admin:pgjobs_schedulerprocess_changelist")).content.decode()
    assert "3.2 s behind" in page and "s ago" in page


def test_a_fired_ticks_job_is_due_when_the_tick_fired_by_the_schedulers_clock():
    schedule = ScheduleFactory(cron="* * * * *")
    minute = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=minute)
    at = minute + timedelta(seconds=3)
    [fired] = Scheduler(routines=[], clock=lambda: at).fire_due()
    assert Job.objects.get(pk=fired.job_id).run_at == at
