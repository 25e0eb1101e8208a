"""Seconds, intervals, jitter, overlap and catch-up policies of schedules, fired by one
scheduler with the clock passed in; and what their fields refuse."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction

from django_pgjobs import Job
from django_pgjobs.cron import jitter_delay
from django_pgjobs.models import Schedule, ScheduleTick
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.schedules import (
    SCHEDULES_CHANNEL,
    NotRun,
    declared_schedule,
    run_now,
    sync_from_settings,
)
from tests.factories import ScheduleFactory

pytestmark = pytest.mark.django_db


def at(hour: int, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, 6, 1, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


@pytest.fixture
def scheduler() -> Scheduler:
    return Scheduler(routines=[])


def planned(now: datetime, **fields) -> Schedule:
    """A schedule a scheduler has seen at ``now`` (its next tick is planned)."""
    schedule = ScheduleFactory(**fields)
    Scheduler(routines=[]).run_once(now)
    schedule.refresh_from_db()
    return schedule


def ticks(schedule: Schedule) -> list[tuple[datetime, int | None, str]]:
    rows = ScheduleTick.objects.filter(schedule=schedule).order_by("fire_at")
    return list(rows.values_list("fire_at", "job_id", "error"))


def set_state(job_id: int, *states: str) -> None:
    """Move a job through ``states`` as a worker would (the trigger checks each move)."""
    for state in states:
        lease = uuid.uuid4() if state == "executing" else None
        Job.objects.filter(pk=job_id).update(state=state, lease=lease)


# -- seconds and intervals --------------------------------------------------------------------


def test_a_six_field_schedule_fires_on_its_seconds(scheduler):
    schedule = planned(at(10, 0, 3), cron="*/10 * * * * *")
    assert schedule.next_fire_at == at(10, 0, 10)
    for second in (10, 10.4, 20, 29.9, 31):
        scheduler.run_once(at(10, 0, second))
    assert [fire_at for fire_at, _, _ in ticks(schedule)] == [at(10, 0, 10), at(10, 0, 20),
                                                              at(10, 0, 30)]  # fmt: skip
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(10, 0, 40)
    job = Job.objects.order_by("id").first()
    assert job.meta["fire_at"] == "2026-06-01T10:00:10+00:00"


def test_an_interval_schedule_fires_every_interval_of_elapsed_time(scheduler):
    schedule = planned(at(10, 0, 1), cron="@every 45s", timezone="Australia/Lord_Howe")
    assert schedule.next_fire_at == at(10, 0, 45)
    scheduler.run_once(at(10, 0, 45))
    scheduler.run_once(at(10, 1, 30))
    assert [fire_at for fire_at, _, _ in ticks(schedule)] == [at(10, 0, 45), at(10, 1, 30)]
    assert schedule.upcoming(2, after=at(10, 1, 30)) == [at(10, 2, 15), at(10, 3)]


def test_changing_a_cron_to_an_interval_replans_it(scheduler):
    schedule = planned(at(10, 0, 1), cron="0 * * * *")
    schedule.cron = "@every 10s"
    schedule.save()
    scheduler.run_once(at(10, 0, 2))
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(10, 0, 10)


# -- jitter ---------------------------------------------------------------------------------


def test_jitter_delays_each_ticks_job_by_the_same_amount_on_any_scheduler(scheduler):
    schedules = [planned(at(10, 30), name=f"report-{n}", cron="0 * * * *", jitter=600)
                 for n in range(20)]  # fmt: skip
    Scheduler(routines=[]).run_once(at(11))
    delays = []
    for schedule in schedules:
        [(fire_at, job_id, _)] = ticks(schedule)
        job = Job.objects.get(pk=job_id)
        expected = jitter_delay(schedule.name, fire_at, 600, timedelta(hours=1))
        assert job.run_at == fire_at + expected
        delays.append(expected)
    assert len(set(delays)) == 20 and max(delays) <= timedelta(seconds=600)


def test_jitter_never_delays_a_job_past_its_next_tick(scheduler):
    schedule = planned(at(10, 0, 1), cron="*/5 * * * * *", jitter=3600)
    for second in (5, 10, 15):
        scheduler.run_once(at(10, 0, second))
    for fire_at, job_id, _ in ticks(schedule):
        run_at = Job.objects.get(pk=job_id).run_at
        assert fire_at <= run_at < fire_at + timedelta(seconds=5)


def test_a_late_tick_with_jitter_is_due_at_once(scheduler):
    schedule = planned(at(10, 30), cron="0 * * * *", jitter=60)
    scheduler.run_once(at(11, 20))  # 20 minutes late: its delay has passed
    [(_, job_id, _)] = ticks(schedule)
    assert Job.objects.get(pk=job_id).run_at == at(11, 20)


# -- overlap ----------------------------------------------------------------------------------


def test_allow_fires_whatever_the_previous_job_is_doing(scheduler):
    schedule = planned(at(10, 0, 1), cron="*/10 * * * * *")
    scheduler.run_once(at(10, 0, 10))
    scheduler.run_once(at(10, 0, 20))
    assert [job_id is not None for _, job_id, _ in ticks(schedule)] == [True, True]


def test_skip_fires_nothing_while_the_previous_job_is_unfinished(scheduler):
    schedule = planned(at(10, 0, 1), cron="*/10 * * * * *", overlap="skip")
    scheduler.run_once(at(10, 0, 10))
    [(_, first, _)] = ticks(schedule)
    scheduler.run_once(at(10, 0, 20))  # available: unfinished
    set_state(first, "executing")
    scheduler.run_once(at(10, 0, 30))
    set_state(first, "retryable")  # between attempts: unfinished still
    scheduler.run_once(at(10, 0, 40))
    set_state(first, "executing", "completed")
    report = scheduler.run_once(at(10, 0, 50))
    assert report.fired[0].job_id is not None
    recorded = ticks(schedule)
    assert [job_id for _, job_id, _ in recorded] == [
        first,
        None,
        None,
        None,
        report.fired[0].job_id,
    ]
    assert [error for _, _, error in recorded[1:4]] == [
        f"skipped: job {first} of this schedule is available (overlap=skip)",
        f"skipped: job {first} of this schedule is executing (overlap=skip)",
        f"skipped: job {first} of this schedule is retryable (overlap=skip)",
    ]
    assert scheduler.stats["skipped"] == 3


def test_queue_lets_one_job_wait_behind_the_running_one(scheduler):
    schedule = planned(at(10, 0, 1), cron="*/10 * * * * *", overlap="queue")
    scheduler.run_once(at(10, 0, 10))
    [(_, running, _)] = ticks(schedule)
    scheduler.run_once(at(10, 0, 20))  # the first has not started: nothing queues behind it
    set_state(running, "executing")
    scheduler.run_once(at(10, 0, 30))  # queued behind the running one
    scheduler.run_once(at(10, 0, 40))  # one is waiting already
    recorded = ticks(schedule)
    assert [job_id is not None for _, job_id, _ in recorded] == [True, False, True, False]
    waiting = Job.objects.get(pk=recorded[2][1])
    assert waiting.state == "waiting"
    assert "waiting to run (overlap=queue)" in recorded[3][2]
    set_state(running, "discarded")  # the running one fails for good: the next runs all the same
    waiting.refresh_from_db()
    assert waiting.state == "available"


def test_overlap_judges_a_pruned_last_job_finished(scheduler):
    schedule = planned(at(10, 0, 1), cron="*/10 * * * * *", overlap="skip")
    scheduler.run_once(at(10, 0, 10))
    Job.objects.all().delete()
    scheduler.run_once(at(10, 0, 20))
    assert all(job_id for _, job_id, _ in ticks(schedule))


def test_run_now_keeps_the_overlap_policy(scheduler):
    skipping = planned(at(10, 0, 1), cron="0 0 1 1 *", overlap="skip")
    first = run_now(skipping)
    with pytest.raises(NotRun, match=f"not run: job {first.pk} of this schedule is available"):
        run_now(skipping)
    assert Job.objects.count() == 1
    queueing = planned(at(10, 0, 1), cron="0 0 1 1 *", overlap="queue")
    running = run_now(queueing)
    set_state(running.pk, "executing")
    behind = run_now(queueing)
    assert behind.state == "waiting"
    queueing.refresh_from_db()
    assert queueing.last_job_id == behind.pk


def test_a_tick_recording_its_job_wakes_no_scheduler(scheduler, second_connection):
    second_connection.execute(f"LISTEN {SCHEDULES_CHANNEL}")
    schedule = planned(at(10, 0, 1), cron="*/10 * * * * *", overlap="skip")
    list(second_connection.notifies(timeout=0.3))
    with transaction.atomic():
        scheduler.run_once(at(10, 0, 10))
    schedule.refresh_from_db()
    assert schedule.last_job_id is not None
    assert [n.payload for n in second_connection.notifies(timeout=0.3)] == []


# -- catching up --------------------------------------------------------------------------


def test_all_fires_every_missed_tick_once_each_oldest_first(scheduler):
    schedule = planned(at(10, 30), cron="0 * * * *", catch_up="all")
    [*fired] = scheduler.run_once(at(15, 20)).fired
    assert [f.fire_at for f in fired] == [at(hour) for hour in range(11, 16)]
    assert [f.missed for f in fired] == [0] * 5
    jobs = Job.objects.order_by("id")
    assert [job.meta["fire_at"] for job in jobs] == [
        f"2026-06-01T{hour}:00:00+00:00" for hour in range(11, 16)
    ]
    schedule.refresh_from_db()
    assert (schedule.last_fire_at, schedule.next_fire_at) == (at(15), at(16))
    assert schedule.last_job_id == jobs.last().pk


def test_all_fires_the_latest_up_to_its_limit_within_its_window(scheduler):
    schedule = planned(at(10, 30), cron="0 * * * *", catch_up="all", catch_up_limit=3,
                       catch_up_window=4 * 3600)  # fmt: skip
    fired = scheduler.run_once(at(20, 20)).fired
    assert [f.fire_at for f in fired] == [at(18), at(19), at(20)]
    assert fired[0].missed == 7
    assert len(ticks(schedule)) == 3


def test_latest_with_a_window_drops_a_tick_older_than_it(scheduler):
    planned(at(10, 30), cron="0 * * * *", catch_up_window=900)
    [fired] = scheduler.run_once(at(11, 20)).fired
    assert (fired.fire_at, fired.missed) == (None, 1)
    [fired] = scheduler.run_once(at(12, 10)).fired
    assert fired.fire_at == at(12)


def test_a_scheduler_down_for_a_day_fires_one_or_at_most_the_limit_and_says_how_many_missed(
    scheduler, caplog
):
    # Every second, down from 10:30 to 10:30 the next day: 86,400 ticks passed.
    latest = planned(at(10, 30), name="latest", cron="* * * * * *")
    every = planned(at(10, 30), name="every", cron="* * * * * *", catch_up="all")
    caplog.set_level("WARNING", logger="django_pgjobs.scheduler")
    fired = scheduler.run_once(at(10, 30) + timedelta(days=1)).fired
    assert len(ticks(latest)) == 1
    assert len(ticks(every)) == 100  # the latest catch_up_limit ticks, no more
    assert Job.objects.count() == 101
    said = sorted(r.getMessage() for r in caplog.records if "missed" in r.getMessage())
    # Counted up to cron.COUNT_LIMIT (1000): the line said "1000 tick(s) missed".
    assert said == [
        "schedule 'every': at least 1000 tick(s) missed while no scheduler could fire them",
        "schedule 'latest': at least 1000 tick(s) missed while no scheduler could fire them",
    ]
    assert sum(f.missed for f in fired) == 2000


def test_a_schedule_created_while_no_scheduler_runs_starts_when_one_is_back(scheduler):
    # As documented: the tick at 11:00, after the row was made but before any scheduler
    # saw it, is no missed tick, even 30 s late under "all".
    schedule = ScheduleFactory(cron="0 * * * *", catch_up="all")
    assert scheduler.run_once(at(11, 0, 30)).fired == []
    schedule.refresh_from_db()
    assert (schedule.next_fire_at, ticks(schedule)) == (at(12), [])


# -- settings ------------------------------------------------------------------------------


def test_settings_schedules_take_the_new_options(settings):
    settings.PGJOBS = {
        **settings.PGJOBS,
        "SCHEDULES": {
            "heartbeat": {"cron": "@every 30s", "task": "testproject.demo.tasks.record",
                          "args": ["beat"], "jitter": 5, "overlap": "skip", "catch_up": "all",
                          "catch_up_window": 600, "catch_up_limit": 10},
        },
    }  # fmt: skip
    assert sync_from_settings() == ["heartbeat"]
    row = Schedule.objects.get()
    assert (row.cron, row.jitter, row.overlap, row.catch_up, row.catch_up_window,
            row.catch_up_limit) == ("@every 30s", 5, "skip", "all", 600, 10)  # fmt: skip


# -- odd input: refused, naming the field, nothing written -------------------------------------

NUL, SURROGATE = "\x00", "\ud800"

ODD_FIELDS = [
    ("cron", "*/5 * * * * *" + NUL),
    ("cron", "@every 30s" + SURROGATE),
    ("cron", "@every " + "9" * 5000 + "s"),
    ("cron", "@every 1e3s"),
    ("cron", "* * * * * * *"),
    ("jitter", -1),
    ("jitter", 86_401),
    ("jitter", 10**30),
    ("jitter", math.nan),
    ("jitter", math.inf),
    ("jitter", 1.5),
    ("jitter", "5"),
    ("jitter", True),
    ("jitter", None),
    ("overlap", "skip" + NUL),
    ("overlap", SURROGATE),
    ("overlap", "never"),
    ("overlap", None),
    ("overlap", ["skip"]),
    ("catch_up", "latest" + NUL),
    ("catch_up", "catch_up"),
    ("catch_up", 1),
    ("catch_up_window", 0),
    ("catch_up_window", -5),
    ("catch_up_window", 2**31),
    ("catch_up_window", math.nan),
    ("catch_up_window", "600"),
    ("catch_up_limit", 0),
    ("catch_up_limit", 1001),
    ("catch_up_limit", 10**100),
    ("catch_up_limit", None),
]


@pytest.mark.parametrize("field, value", ODD_FIELDS, ids=[f"{f}={v!r:.30}" for f, v in ODD_FIELDS])
def test_odd_policy_values_are_refused_on_their_field_by_save_and_full_clean(field, value):
    schedule = ScheduleFactory.build(**{field: value})
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert field in refused.value.message_dict
    with transaction.atomic():
        with pytest.raises(ValidationError) as refused:
            schedule.save()
        assert field in refused.value.message_dict
        assert Schedule.objects.count() == 0  # and the transaction is still usable


@pytest.mark.parametrize("field, value", ODD_FIELDS, ids=[f"{f}={v!r:.30}" for f, v in ODD_FIELDS])
def test_odd_policy_values_in_settings_fail_with_the_field_named(field, value):
    options = {"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", field: value}
    with pytest.raises(ImproperlyConfigured, match=f"{field}:"):
        declared_schedule("odd", options, offline=True)


def test_a_settings_schedule_with_an_odd_option_name_is_refused_clearly():
    options = {"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", 5: 1, "a\x00": 2}
    with pytest.raises(ImproperlyConfigured, match=r"unknown option\(s\) 'a\\x00', 5"):
        declared_schedule("odd", options, offline=True)
