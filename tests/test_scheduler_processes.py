"""Several scheduler processes at once: seconds-precision ticks, intervals and jitter,
each tick fired exactly once, and the overlap policies held, on simulated time and on
the real clock with a real worker."""

from __future__ import annotations

import calendar
import itertools
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from django_pgjobs.cron import jitter_delay, timing
from django_pgjobs.models import Job, Schedule, ScheduleTick
from tests.conftest import ROOT
from tests.conftest import test_database_env as child_database_env
from tests.factories import ScheduleFactory
from tests.test_scheduler import run_on_shared_time

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
logger = logging.getLogger(__name__)


def simulated_schedulers(count: int, start: datetime, logs: Path) -> list[subprocess.Popen]:
    env = {**os.environ, **child_database_env(), "PGJOBS_LOG_LEVEL": "WARNING"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.simulated_scheduler", start.isoformat()],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(logs / f"scheduler-{n}.log").open("w"),
            text=True,
        )
        for n in range(count)
    ]


def run_simulated(
    count: int,
    start: datetime,
    end: datetime,
    logs: Path,
    before_each: Callable[[datetime], None] | None = None,
) -> list[dict[str, int]]:
    """Run ``count`` scheduler processes on shared simulated time; their stats."""
    processes = simulated_schedulers(count, start, logs)
    began = time.monotonic()
    try:
        run_on_shared_time(processes, end, before_each)
        outputs = [process.communicate(timeout=60)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    text = "".join(path.read_text() for path in logs.iterdir())
    assert [process.returncode for process in processes] == [0] * count, text
    stats = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    logger.warning(
        "%s simulated minutes in %.1fs by %d processes, fired %s",
        (end - start) / timedelta(minutes=1),
        time.monotonic() - began,
        count,
        " + ".join(str(s.get("fired", 0)) for s in stats),
    )
    return stats


def fired_ticks(schedule: Schedule) -> list[ScheduleTick]:
    return list(ScheduleTick.objects.filter(schedule=schedule).order_by("fire_at"))


def test_three_processes_fire_seconds_and_interval_ticks_once_with_the_jitter_they_agree_on(
    tmp_path,
):
    # 34 simulated minutes around Lord Howe Island's fall-back night: at 15:00 UTC its
    # clocks go from 02:00 (+11) back to 01:30 (+10:30), so a schedule every 10 s on its
    # clock is quiet for half an hour: those times fired already.
    start = datetime(2026, 4, 4, 14, 58, tzinfo=UTC)
    end = start + timedelta(minutes=34)
    schedules = [
        ScheduleFactory(cron="*/30 * * * * *", timezone="UTC"),
        ScheduleFactory(cron="*/10 * * * * *", timezone="Australia/Lord_Howe"),
        ScheduleFactory(cron="@every 13s", timezone="Europe/Berlin"),
        ScheduleFactory(cron="*/20 * * * * *", timezone="UTC", jitter=15),
    ]
    stats = run_simulated(3, start, end, tmp_path)

    total = 0
    for schedule in schedules:
        expected = timing(schedule.cron, schedule.timezone).fire_times(start, end)
        ticks = fired_ticks(schedule)
        assert [tick.fire_at for tick in ticks] == expected, schedule.cron
        assert all(tick.job_id and not tick.error for tick in ticks)
        total += len(expected)
    lord_howe = [tick.fire_at for tick in fired_ticks(schedules[1])]
    assert max(b - a for a, b in itertools.pairwise(lord_howe)) == timedelta(minutes=30, seconds=10)
    assert Job.objects.count() == total
    assert sum(s.get("fired", 0) for s in stats) == total
    assert [s.get("missed", 0) for s in stats] == [0, 0, 0]
    # Whichever process fired a tick, its job is due at the tick plus the same delay.
    jittered = schedules[3]
    for tick in fired_ticks(jittered):
        delay = jitter_delay(jittered.name, tick.fire_at, 15, timedelta(seconds=20))
        assert Job.objects.get(pk=tick.job_id).run_at == tick.fire_at + delay
    delays = {
        Job.objects.get(pk=tick.job_id).run_at - tick.fire_at for tick in fired_ticks(jittered)
    }
    assert len(delays) > 50 and max(delays) <= timedelta(seconds=15)


class ScriptedWorker:
    """Runs the jobs of the given schedules one at a time on simulated time, looking
    every ``every`` (schedulers wake at other instants too: a retry, say): a job
    starts when none of its schedule is executing and takes ``duration``. Checks at
    every instant that the overlap policies held."""

    def __init__(self, schedules: list[Schedule], duration: timedelta, every: timedelta) -> None:
        self.schedules = schedules
        self.duration = duration
        self.every = every
        self.started: dict[int, datetime] = {}
        self.most_unstarted: dict[str, int] = {}

    def __call__(self, now: datetime) -> None:
        for schedule in self.schedules:
            jobs = Job.objects.filter(meta__schedule=schedule.name)
            self._check(schedule, jobs)
            if (now - datetime(2000, 1, 1, tzinfo=UTC)) % self.every:
                continue
            for job in jobs.filter(state="executing"):
                if now - self.started[job.pk] >= self.duration:
                    Job.objects.filter(pk=job.pk).update(state="completed", lease=None,
                                                         finished_at=now)  # fmt: skip
            if not jobs.filter(state="executing").exists():
                following = jobs.filter(state="available").order_by("id").first()
                if following is not None:
                    Job.objects.filter(pk=following.pk).update(
                        state="executing", lease=uuid.uuid4(), attempt=1, attempted_at=now
                    )
                    self.started[following.pk] = now

    def _check(self, schedule: Schedule, jobs: QuerySet[Job]) -> None:
        unstarted = jobs.filter(state__in=["available", "waiting", "scheduled"]).count()
        self.most_unstarted[schedule.name] = max(
            self.most_unstarted.get(schedule.name, 0), unstarted
        )
        assert jobs.filter(state="executing").count() <= 1


def test_overlap_policies_hold_across_scheduler_processes(tmp_path):
    start = datetime(2026, 6, 1, 10, tzinfo=UTC)
    end = start + timedelta(minutes=10)
    skip = ScheduleFactory(cron="*/10 * * * * *", overlap="skip")
    queue = ScheduleFactory(cron="*/10 * * * * *", overlap="queue")
    allow = ScheduleFactory(cron="*/10 * * * * *")
    worker = ScriptedWorker([skip, queue], timedelta(seconds=25), every=timedelta(seconds=10))
    run_simulated(2, start, end, tmp_path, before_each=worker)

    ticks = {s.name: fired_ticks(s) for s in (skip, queue, allow)}
    assert all(len(found) == 60 for found in ticks.values())  # each tick once
    assert all(tick.job_id for tick in ticks[allow.name])

    def enqueued_at(schedule: Schedule) -> list[int]:
        """Seconds after the start of the ticks that enqueued a job."""
        return [
            int((tick.fire_at - start).total_seconds())
            for tick in ticks[schedule.name]
            if tick.job_id
        ]

    # skip: a job runs 25 s, seen done at the next tick 30 s later: one every 40 s.
    assert enqueued_at(skip) == list(range(10, 601, 40))
    # queue: from the second on, each waits behind the running one: one every 30 s.
    assert enqueued_at(queue) == [10, *range(20, 601, 30)]
    assert worker.most_unstarted == {skip.name: 1, queue.name: 1}
    for schedule in (skip, queue):
        for tick in ticks[schedule.name]:
            assert bool(tick.job_id) != tick.error.startswith("skipped: job "), tick.error
    waited = Job.objects.filter(meta__schedule=queue.name, meta__on_dependency_failure="run")
    assert waited.count() == len(enqueued_at(queue)) - 1


# -- on the real clock ---------------------------------------------------------------------


@pytest.fixture
def real_schedulers(tmp_path: Path) -> Iterator[Callable[[int], list[subprocess.Popen]]]:
    started: list[subprocess.Popen] = []

    def start(count: int) -> list[subprocess.Popen]:
        for n in range(count):
            log = (tmp_path / f"runscheduler-{n}.log").open("wb")
            started.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "manage.py"), "runscheduler", "--no-maintenance"],
                    cwd=ROOT,
                    env={**os.environ, **child_database_env()},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return started

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.iterdir())
    assert all(process.returncode == 0 for process in started), logs


def test_runscheduler_processes_fire_every_second_once_on_the_database_clock(real_schedulers, wait):
    every = ScheduleFactory(cron="* * * * * *")
    jittered = ScheduleFactory(cron="*/2 * * * * *", jitter=5)
    real_schedulers(3)
    wait(lambda: ScheduleTick.objects.filter(schedule=every).count() >= 6, timeout=60)
    wait(lambda: ScheduleTick.objects.filter(schedule=jittered).count() >= 3, timeout=30)
    ticks = fired_ticks(every)
    seconds = [tick.fire_at for tick in ticks]
    assert all(t.microsecond == 0 for t in seconds)
    assert [b - a for a, b in itertools.pairwise(seconds)] == [timedelta(seconds=1)] * (
        len(seconds) - 1
    ), "a second was skipped or fired twice"
    lateness = [tick.fired_at - tick.fire_at for tick in ticks]
    logger.warning(
        "per-second ticks fired %s late", ", ".join(f"{t.total_seconds():.3f}s" for t in lateness)
    )
    assert all(timedelta(0) <= late < timedelta(seconds=1) for late in lateness[1:])
    for tick in fired_ticks(jittered):
        delay = jitter_delay(jittered.name, tick.fire_at, 5, timedelta(seconds=2))
        run_at = Job.objects.get(pk=tick.job_id).run_at
        assert run_at == max(tick.fire_at + delay, tick.fired_at)


def test_a_real_worker_never_runs_two_jobs_of_a_skip_or_queue_schedule_at_once(
    real_schedulers, worker_process, wait
):
    skip = ScheduleFactory(cron="* * * * * *", overlap="skip",
                           task="tests.tasks_for_tests.blocked", args=[2.5])  # fmt: skip
    queue = ScheduleFactory(cron="* * * * * *", overlap="queue",
                            task="tests.tasks_for_tests.blocked", args=[2.5])  # fmt: skip
    real_schedulers(2)
    worker = worker_process("--concurrency", "4")
    done = Job.objects.filter(state="completed")
    wait(lambda: done.filter(meta__schedule=queue.name).count() >= 3, timeout=60)
    wait(lambda: done.filter(meta__schedule=skip.name).count() >= 2, timeout=30)
    worker.stop()
    for schedule in (skip, queue):
        runs = sorted(
            done.filter(meta__schedule=schedule.name).values_list("attempted_at", "finished_at")
        )
        assert all(
            finished <= next_started
            for (_, finished), (next_started, _) in itertools.pairwise(runs)
        ), f"{schedule.overlap}: two jobs ran at once: {runs}"
        gaps = [(b - f).total_seconds() for (_, f), (b, _) in itertools.pairwise(runs)]
        logger.warning("%s: gaps between runs %s s", schedule.overlap, gaps)
        skipped = ScheduleTick.objects.filter(schedule=schedule, error__startswith="skipped:")
        assert skipped.exists()
    behind = Job.objects.filter(meta__schedule=queue.name, meta__on_dependency_failure="run")
    assert behind.exists()


def test_schedules_whose_next_tick_lies_far_or_nowhere_leave_a_real_scheduler_firing(
    real_schedulers, wait
):
    # A tick years away (the next Feb 29), the longest interval,
    # and rows no form takes (written by SQL: a date that never comes) beside one that
    # fires each second: the scheduler plans what it can and fires on.
    rare = ScheduleFactory(cron="0 0 29 2 *", timezone="UTC")
    longest = ScheduleFactory(cron="@every 365d")
    never = [ScheduleFactory(cron="* * * * *") for _ in range(2)]
    Schedule.objects.filter(pk=never[0].pk).update(cron="0 0 30 2 *")
    Schedule.objects.filter(pk=never[1].pk).update(cron="0 0 31 4 *")
    every = ScheduleFactory(cron="* * * * * *")
    real_schedulers(1)
    wait(lambda: ScheduleTick.objects.filter(schedule=every).count() >= 3, timeout=60)
    planned = dict(Schedule.objects.values_list("pk", "next_fire_at"))
    assert planned[rare.pk] == next_leap_day(timezone.now())
    assert planned[longest.pk] - timezone.now() <= timedelta(days=365)
    assert [planned[schedule.pk] for schedule in never] == [None, None]


def next_leap_day(after: datetime) -> datetime:
    """The first Feb 29 (00:00 UTC) after ``after``: 2028 was written down in 2026."""
    years = itertools.count(after.year)
    return next(
        day
        for year in years
        if calendar.isleap(year) and (day := datetime(year, 2, 29, tzinfo=UTC)) > after
    )


def test_a_runscheduler_killed_in_the_middle_of_a_tick_leaves_it_to_another_once(
    real_schedulers, site_sql, wait
):
    # The first tick any scheduler records stalls in a site's trigger (a sequence is not
    # rolled back, so only that one stalls): that scheduler holds the row and the tick,
    # uncommitted, when it is killed. Its server process holds them until the statement
    # ends (PostgreSQL notices the client gone when it next reads from it), then rolls
    # back. The other skipped the row while it was held; it then fires each second from
    # the stalled one on (catch_up="all"), each once.
    site_sql(
        "CREATE SEQUENCE sched23_stall;"
        "CREATE FUNCTION sched23_stall() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF nextval('sched23_stall') = 1 THEN PERFORM pg_sleep(8); END IF;"
        " RETURN NEW; END $$;"
        "CREATE TRIGGER sched23_stall BEFORE INSERT ON pgjobs_scheduletick"
        " FOR EACH ROW EXECUTE FUNCTION sched23_stall()",
        "DROP TRIGGER sched23_stall ON pgjobs_scheduletick; DROP FUNCTION sched23_stall();"
        "DROP SEQUENCE sched23_stall",
    )
    every = ScheduleFactory(cron="* * * * * *", catch_up="all")
    started = real_schedulers(2)

    def stalled() -> str | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT application_name FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                " AND query LIKE '%%pgjobs_scheduletick%%'"
            )
            row = cursor.fetchone()
        return row[0] if row else None

    name = wait(stalled, timeout=60)
    [victim] = [p for p in started if name.endswith(f":{p.pid}")]
    # Held, uncommitted: no tick recorded, and the row still says the stalled one is next.
    assert not ScheduleTick.objects.filter(schedule=every).exists()
    stalled_tick = Schedule.objects.get(pk=every.pk).next_fire_at
    victim.kill()
    victim.wait(30)
    started.remove(victim)  # its exit is no clean one
    wait(lambda: ScheduleTick.objects.filter(schedule=every).count() >= 5, timeout=60)
    ticks = fired_ticks(every)
    seconds = [tick.fire_at for tick in ticks]
    assert seconds[0] == stalled_tick
    assert [b - a for a, b in itertools.pairwise(seconds)] == [timedelta(seconds=1)] * (
        len(seconds) - 1
    ), "a second was skipped or fired twice"
    assert all(tick.job_id for tick in ticks)
    assert Job.objects.filter(meta__schedule=every.name).count() == len(ticks)
