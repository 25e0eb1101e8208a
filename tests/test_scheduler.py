"""The scheduler loop against real connections and processes: live edits, a lost LISTEN
connection, and several schedulers firing each tick exactly once."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs.cron import Cron
from django_pgjobs.models import Job, Schedule, ScheduleTick
from django_pgjobs.scheduler import Scheduler
from tests.conftest import ROOT, wait_until
from tests.conftest import test_database_env as child_database_env
from tests.factories import ScheduleFactory

pytestmark = pytest.mark.django_db(transaction=True)
logger = logging.getLogger(__name__)


class ShiftedClock:
    """Real time, shifted, so a test can put a minute boundary just ahead instead of
    waiting up to a minute for one. Sleeps still take real time."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return timezone.now() + self.shift

    def minute_starts_in(self, seconds: float) -> datetime:
        """Shift so that a minute starts ``seconds`` from now; returns that minute."""
        real = timezone.now()
        minute = (real + timedelta(minutes=2)).replace(second=0, microsecond=0)
        self.shift = minute - timedelta(seconds=seconds) - real
        return minute


@pytest.fixture
def running_scheduler(settings: Any) -> Iterator[Callable[..., Scheduler]]:
    """Start Scheduler.run() on a thread; it sleeps up to 5 minutes between looks at
    the table, so anything sooner was caused by a notification."""
    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": {}}
    started: list[tuple[Scheduler, threading.Thread]] = []

    def start(**options: Any) -> Scheduler:
        scheduler = Scheduler(routines=[], max_sleep=timedelta(minutes=5), **options)
        thread = threading.Thread(target=scheduler.run, daemon=True)
        thread.start()
        wait_until(lambda: scheduler._notifier and scheduler._notifier.connected.is_set())
        started.append((scheduler, thread))
        return scheduler

    yield start
    for scheduler, thread in started:
        scheduler.request_stop()
        thread.join(10)
        assert not thread.is_alive(), "scheduler thread did not stop"


def next_fire_at(schedule: Schedule) -> datetime | None:
    schedule.refresh_from_db()
    return schedule.next_fire_at


def test_an_edited_cron_takes_effect_at_once_without_a_restart(running_scheduler, wait):
    clock = ShiftedClock()
    schedule = ScheduleFactory(cron="0 0 1 1 *")  # once a year
    running_scheduler(clock=clock)
    wait(lambda: next_fire_at(schedule) is not None)
    assert next_fire_at(schedule).month == 1

    minute = clock.minute_starts_in(2.0)
    edited = time.monotonic()
    schedule.cron = "* * * * *"
    schedule.save()
    wait(lambda: next_fire_at(schedule) == minute, timeout=2)
    replanned = time.monotonic() - edited
    tick = wait(lambda: ScheduleTick.objects.filter(schedule=schedule).first(), timeout=10)
    late = clock() - minute
    logger.warning(
        "edit to replan: %.1f ms; tick fired %.1f ms after its time",
        replanned * 1000,
        late.total_seconds() * 1000,
    )
    assert tick.fire_at == minute
    assert Job.objects.get(pk=tick.job_id).args == schedule.args


def test_a_schedule_added_while_running_fires_and_a_deleted_one_stops(running_scheduler, wait):
    clock = ShiftedClock()
    minute = clock.minute_starts_in(1.5)
    running_scheduler(clock=clock)
    doomed = ScheduleFactory(cron="0 0 1 1 *")
    added = ScheduleFactory(cron="* * * * *")
    wait(lambda: next_fire_at(added) == minute, timeout=2)
    doomed.delete()
    wait(lambda: ScheduleTick.objects.filter(schedule=added).exists(), timeout=10)
    assert ScheduleTick.objects.count() == 1


def test_after_losing_its_connections_the_scheduler_reconnects_and_re_reads(
    running_scheduler, second_connection, wait
):
    clock = ShiftedClock()
    schedule = ScheduleFactory(cron="* * * * *")
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=datetime(2100, 1, 1, tzinfo=UTC))
    scheduler = running_scheduler(clock=clock)
    listener = scheduler._notifier.backend_pid()

    # A change whose notification never arrives (as if sent while disconnected):
    # the scheduler can only learn of it by re-reading when it reconnects.
    minute = clock.minute_starts_in(2.0)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=minute)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]
    others = (
        "FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid NOT IN (pg_backend_pid(), %s)"
    )
    # The query connection opens with the loop's first look, which a busy machine
    # may not have taken yet when LISTEN is up.
    wait(lambda: second_connection.execute(f"SELECT count(*) {others}", [ours]).fetchone()[0] >= 2)
    cut = second_connection.execute(
        f"SELECT count(pg_terminate_backend(pid)) {others}", [ours]
    ).fetchone()[0]
    assert cut >= 2, "expected the scheduler's LISTEN and query connections"

    wait(lambda: scheduler._notifier.backend_pid() not in (None, listener), timeout=10)
    tick = wait(lambda: ScheduleTick.objects.filter(schedule=schedule).first(), timeout=10)
    assert tick.fire_at == minute


def run_on_shared_time(
    processes: list[subprocess.Popen],
    end: datetime,
    before_each: Callable[[datetime], None] | None = None,
) -> None:
    """Keep simulated time for schedulers started with tests.simulated_scheduler: wake
    whoever asked for the earliest instant (all of them if they asked for the same),
    until every request is past ``end``. ``before_each(instant)`` runs before they wake."""

    def request(process: subprocess.Popen) -> datetime:
        line = process.stdout.readline()
        assert line.startswith("wait "), f"scheduler process said {line!r}"
        return datetime.fromisoformat(line.split(" ", 1)[1].strip())

    def tell(process: subprocess.Popen, word: str) -> None:
        process.stdin.write(word + "\n")
        process.stdin.flush()

    waiting = {process: request(process) for process in processes}
    while (now := min(waiting.values())) <= end:
        woken = [process for process, at in waiting.items() if at == now]
        if before_each is not None:
            before_each(now)
        for process in woken:
            tell(process, "go")
        for process in woken:  # they run their passes side by side
            waiting[process] = request(process)
    for process in processes:
        tell(process, "stop")


@pytest.mark.slow
def test_two_scheduler_processes_fire_each_of_many_ticks_exactly_once(tmp_path):
    # 90 simulated minutes of Berlin's fall-back night (02:30 CEST, then 02:00-02:50
    # CET again), in three timezones.
    start = datetime(2026, 10, 25, 0, 20, tzinfo=UTC)
    end = start + timedelta(minutes=90)
    schedules = [
        ScheduleFactory(cron="* * * * *", timezone="UTC"),
        ScheduleFactory(cron="*/5 * * * *", timezone="Europe/Berlin"),
        ScheduleFactory(cron="30 2 * * *", timezone="Europe/Berlin"),
        ScheduleFactory(cron="7 * * * *", timezone="America/New_York"),
    ]
    env = {**os.environ, **child_database_env(), "PGJOBS_LOG_LEVEL": "WARNING"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.simulated_scheduler", start.isoformat()],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"scheduler-{n}.log").open("w"),
            text=True,
        )
        for n in range(2)
    ]
    began = time.monotonic()
    try:
        run_on_shared_time(processes, end)
        results = [process.communicate(timeout=60)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    elapsed = time.monotonic() - began
    logs = "".join(path.read_text() for path in tmp_path.iterdir())
    assert [process.returncode for process in processes] == [0, 0], logs
    stats = [json.loads(output.strip().splitlines()[-1]) for output in results]

    total = 0
    for schedule in schedules:
        expected = Cron.parse(schedule.cron, schedule.timezone).fire_times(start, end)
        fired = list(
            ScheduleTick.objects.filter(schedule=schedule)
            .order_by("fire_at")
            .values_list("fire_at", flat=True)
        )
        assert fired == expected, f"{schedule.cron} in {schedule.timezone}"
        total += len(expected)
    assert Job.objects.count() == total
    assert [s.get("missed", 0) for s in stats] == [0, 0]
    assert sum(s.get("fired", 0) for s in stats) == total
    assert set(ScheduleTick.objects.values_list("job_id", flat=True)) == set(
        Job.objects.values_list("pk", flat=True)
    )
    logger.warning(
        "%d ticks over 90 simulated minutes in %.1fs by two processes (%s)",
        total,
        elapsed,
        " + ".join(str(s.get("fired", 0)) for s in stats),
    )


@pytest.mark.slow
def test_runscheduler_creates_the_settings_schedules_and_stops_cleanly_on_sigterm(wait, tmp_path):
    from django.conf import settings

    log_path = tmp_path / "runscheduler.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runscheduler"],
            cwd=ROOT,
            env={**os.environ, **child_database_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            declared = set(settings.PGJOBS.get("SCHEDULES", {}))
            assert declared, "the demo project declares schedules"
            wait(lambda: set(Schedule.objects.values_list("name", flat=True)) == declared, 30)
            wait(lambda: Schedule.objects.filter(next_fire_at__isnull=True).count() == 0, 30)
            wait(
                lambda: (
                    b" scheduler " in log_path.read_bytes()
                    and b" started: " in log_path.read_bytes()
                ),
                30,
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    assert re.search(r"scheduler \d+ stopped: ", log_path.read_text())
