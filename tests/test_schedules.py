"""Schedules in the database: validation, live edits, settings sync, and firing each
tick exactly once, with the clock passed in."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, connection, transaction
from django.forms import modelform_factory

from django_pgjobs import Job, db
from django_pgjobs.models import Schedule, ScheduleTick
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.schedules import SCHEDULES_CHANNEL, sync_from_settings
from django_pgjobs.signals import job_enqueued
from tests.factories import JobFactory, ScheduleFactory

pytestmark = pytest.mark.django_db


def at(hour: int, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, 6, 1, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


@pytest.fixture
def scheduler() -> Scheduler:
    """A scheduler without maintenance, driven by run_once(now)."""
    return Scheduler(routines=[])


def hourly(**fields) -> Schedule:
    """An hourly schedule planned for 11:00 as if a scheduler had seen it at 10:30."""
    schedule = ScheduleFactory(cron="0 * * * *", **fields)
    Scheduler(routines=[]).run_once(at(10, 30))
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(11)
    return schedule


# -- validation: the admin and forms get these for free -----------------------------------


def test_an_invalid_cron_is_an_error_on_the_cron_field_and_nothing_is_saved():
    schedule = Schedule(name="bad", cron="61 * * * *", task="testproject.demo.tasks.add")
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert "out of range" in caught.value.message_dict["cron"][0]
    with pytest.raises(ValidationError, match="cron"):
        schedule.save()
    assert not Schedule.objects.exists()


def test_an_unknown_timezone_is_an_error_on_the_timezone_field_and_nothing_is_saved():
    schedule = Schedule(
        name="bad", cron="0 9 * * *", timezone="Europe/Bxrlin", task="testproject.demo.tasks.add"
    )
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert "unknown timezone 'Europe/Bxrlin'" in caught.value.message_dict["timezone"][0]
    with pytest.raises(ValidationError, match="timezone"):
        schedule.save()
    assert not Schedule.objects.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("cron", "0," * 200_000 + "0 * * * *"),  # croniter took 3 s to read the list
        ("cron", "x" * 1_000_000),
        ("cron", "@every " + "1" * 1_000_000 + "s"),
        ("timezone", "Europe/" + "x" * 1_000_000),
    ],
)
def test_a_huge_cron_or_timezone_is_refused_at_once_in_a_message_of_a_line(field, value):
    # Each message quoted the whole value: a form showed a megabyte back, and save()
    # put it in place of the "too long" the column check said.
    fields = {"name": "huge", "cron": "0 9 * * *", "task": "testproject.demo.tasks.add"}
    schedule = Schedule(**(fields | {field: value}))
    for check in (schedule.full_clean, schedule.save):
        began = time.monotonic()
        with pytest.raises(ValidationError) as caught:
            check()
        assert time.monotonic() - began < 0.5
        said = caught.value.message_dict[field]
        assert all(len(text) < 400 for text in said), [text[:400] for text in said]
        assert any("characters" in text for text in said), said
    assert not Schedule.objects.exists()


def test_a_model_form_shows_each_problem_on_its_field():
    form_class = modelform_factory(Schedule, fields="__all__")
    form = form_class(
        data={
            "name": "nightly",
            "cron": "30 2 * *",
            "timezone": "Mars/Olympus",
            "task": "testproject.demo.tasks.nope",
            "args": "[]",
            "kwargs": "{}",
            "catch_up": "latest",
            "jitter": "0",
            "overlap": "allow",
            "catch_up_limit": "100",
            "enabled": "on",
        }
    )
    assert not form.is_valid()
    assert set(form.errors) == {"cron", "timezone", "task"}
    assert "has 4 fields" in form.errors["cron"][0]
    assert "last_fire_at" not in form.fields and "next_fire_at" not in form.fields


@pytest.mark.parametrize(
    "fields, field, fragment",
    [
        ({"task": "testproject.demo.tasks.missing"}, "task", "unknown task"),
        ({"task": "testproject.demo.tasks.ad"}, "task", "mean 'testproject.demo.tasks.add'?"),
        ({"queue": "no-such-queue"}, "queue", "unknown queue"),
        ({"queue": "bad name"}, "queue", "invalid queue name"),
        ({"args": {"not": "a list"}}, "args", "JSON list"),
        ({"kwargs": [1]}, "kwargs", "JSON object"),
        ({"kwargs": {"when": datetime(2026, 1, 1)}}, "kwargs", "can't be stored as JSON"),
    ],
)
def test_the_job_a_schedule_would_enqueue_is_checked_field_by_field(fields, field, fragment):
    schedule = ScheduleFactory.build(**fields)
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert fragment in " ".join(caught.value.message_dict[field])


def test_a_valid_schedule_passes_full_clean_and_lists_its_upcoming_fire_times():
    schedule = ScheduleFactory.build(cron="30 2 * * *", timezone="Europe/Berlin")
    schedule.full_clean()
    assert schedule.upcoming(2, after=datetime(2026, 3, 28, 12, tzinfo=UTC)) == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 02:30 is skipped: 03:00 CEST
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]


def test_upcoming_lists_the_fire_times_up_to_the_last_time_a_row_holds():
    """The next one past the year 9999 was an OverflowError or "year 10000 is out of
    range" (ValueError): the list stops where times end instead."""
    every_minute = ScheduleFactory.build(cron="* * * * *")
    assert every_minute.upcoming(5, after=datetime(9999, 12, 30, 23, 58, tzinfo=UTC)) == [
        datetime(9999, 12, 30, 23, 59, tzinfo=UTC)
    ]
    leap_days = ScheduleFactory.build(cron="0 0 29 2 *")
    assert leap_days.upcoming(5, after=datetime(9990, 1, 1, tzinfo=UTC)) == [
        datetime(9992, 2, 29, tzinfo=UTC),
        datetime(9996, 2, 29, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    "count, after, message",
    [
        ("5", None, "count must be a whole number, not '5'"),
        (2.5, None, "count must be a whole number, not 2.5"),
        (10**9, None, "count must be between 0 and 10000"),
        (2, "2026-01-01", "after must be a timezone-aware datetime, not str '2026-01-01'"),
        (2, datetime(2026, 1, 1), "after must be timezone-aware"),
        (2, datetime(9999, 12, 31, 12, tzinfo=UTC), "after 9999-12-31T12:00:00+00:00 is out"),
    ],
)
def test_upcoming_refuses_what_is_no_count_or_time_saying_which(count, after, message):
    """They were a TypeError, an AttributeError ('str' object has no attribute
    'tzinfo'), a loop of 10**9 fire times and an OverflowError."""
    from django_pgjobs import InvalidOption

    with pytest.raises(InvalidOption, match=re.escape(message)):
        ScheduleFactory.build(cron="* * * * *").upcoming(count, after=after)


# -- live edits ------------------------------------------------------------------------


def test_saving_a_stale_form_never_moves_the_scheduler_times_back():
    schedule = hourly()
    loaded = Schedule.objects.get(pk=schedule.pk)  # e.g. an admin form opened now
    Scheduler(routines=[]).run_once(at(11))  # the 11:00 tick fires meanwhile
    loaded.args = ["edited"]
    loaded.save()
    schedule.refresh_from_db()
    assert schedule.args == ["edited"]
    assert (schedule.last_fire_at, schedule.next_fire_at) == (at(11), at(12))


@pytest.mark.parametrize(
    "change, replanned",
    [
        ({"cron": "*/5 * * * *"}, True),
        ({"timezone": "Asia/Tokyo"}, True),
        ({"args": ["other"]}, False),
        ({"enabled": False}, False),
    ],
)
def test_changing_when_a_schedule_fires_makes_schedulers_plan_it_anew(change, replanned):
    schedule = hourly()
    for name, value in change.items():
        setattr(schedule, name, value)
    schedule.save()
    schedule.refresh_from_db()
    assert (schedule.next_fire_at is None) == replanned


def test_edits_made_with_sql_are_replanned_too():
    schedule = hourly()
    Schedule.objects.filter(pk=schedule.pk).update(cron="*/10 * * * *")
    schedule.refresh_from_db()
    assert schedule.next_fire_at is None
    Scheduler(routines=[]).run_once(at(10, 31))
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(10, 40)


def test_a_re_enabled_schedule_does_not_fire_for_ticks_it_slept_through(scheduler):
    schedule = hourly(catch_up="latest")
    schedule.enabled = False
    schedule.save()
    scheduler.run_once(at(15, 30))
    schedule.enabled = True
    schedule.save()
    report = scheduler.run_once(at(15, 31))
    assert report.fired == []
    assert not Job.objects.exists()
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(16)


@pytest.mark.django_db(transaction=True)
def test_creating_editing_and_deleting_a_schedule_notify_on_commit(second_connection):
    def notified() -> list[str]:
        return [n.payload for n in second_connection.notifies(timeout=0.3)]

    second_connection.execute(f"LISTEN {SCHEDULES_CHANNEL}")
    with transaction.atomic():
        schedule = ScheduleFactory()
        assert notified() == [], "notified before commit"
    assert notified() == [str(schedule.pk)]
    Scheduler(routines=[]).run_once()  # plans next_fire_at: the scheduler's own write
    assert notified() == [], "a scheduler's bookkeeping woke the schedulers"
    schedule.cron = "*/2 * * * *"
    schedule.save()
    assert notified() == [str(schedule.pk)]
    pk = schedule.pk
    schedule.delete()
    assert notified() == [str(pk)]


# -- schedules declared in settings ----------------------------------------------------

DECLARED = {
    "nightly-report": {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "task": "testproject.demo.tasks.record",
        "args": ["report"],
        "catch_up": "none",
        "jitter": 300,
    }
}


def test_settings_schedules_are_created_once_and_the_database_wins_after(settings, caplog):
    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": DECLARED}
    assert sync_from_settings() == ["nightly-report"]
    row = Schedule.objects.get(name="nightly-report")
    assert (row.cron, row.timezone, row.args, row.catch_up, row.jitter) == (
        "30 2 * * *",
        "Europe/Berlin",
        ["report"],
        "none",
        300,
    )
    row.cron = "45 3 * * *"  # edited in the admin
    row.save()
    with caplog.at_level(logging.WARNING, logger="django_pgjobs.schedules"):
        assert sync_from_settings() == []
    assert Schedule.objects.get(name="nightly-report").cron == "45 3 * * *"
    # The values, not just the field's name: a schedule declared without a timezone
    # takes TIME_ZONE's, and a project that changed it was warned of ['timezone'] alone.
    assert (
        "schedule 'nightly-report' in PGJOBS['SCHEDULES'] differs from its row "
        "(cron: '30 2 * * *' in settings, '45 3 * * *' in the database); the database wins"
    ) in caplog.text


def test_a_deleted_settings_schedule_comes_back_on_the_next_sync(settings):
    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": DECLARED}
    sync_from_settings()
    Schedule.objects.all().delete()
    assert sync_from_settings() == ["nightly-report"]


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ({"cron": "0 9 * * *"}, "missing ['task']"),
        ({"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", "when": 1}, "unknown option"),
        ({"cron": "0 25 * * *", "task": "testproject.demo.tasks.add"}, "cron:"),
        ({"cron": "0 9 * * *", "task": "x.y", "timezone": "Nowhere"}, "timezone:"),
        ({"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", "args": 5}, "args:"),
        ({"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", "catch_up": "no"}, "catch_up"),
        (
            {"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", "misfire": "skip"},
            "'misfire' is now 'catch_up'",
        ),
    ],
)
def test_bad_settings_schedules_fail_the_system_check_and_the_sync(entry, fragment, settings):
    from django_pgjobs.checks import check_settings

    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": {"broken": entry}}
    messages = [error.msg for error in check_settings()]
    assert any(fragment in message for message in messages), messages
    with pytest.raises(ImproperlyConfigured, match="broken"):
        sync_from_settings()
    assert not Schedule.objects.exists()


def test_a_settings_schedule_missing_an_argument_names_the_field_once(settings):
    # The check used to say "is invalid: args: args: missing argument 'b' of add()".
    from django_pgjobs.checks import check_settings

    entry = {"cron": "0 9 * * *", "task": "testproject.demo.tasks.add", "args": [1]}
    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": {"sum": entry}}
    (message,) = [error.msg for error in check_settings()]
    assert message == "PGJOBS['SCHEDULES']['sum'] is invalid: args: missing argument 'b' of add()"


@pytest.mark.parametrize(
    "setting, value, fragment",
    [
        ("MISFIRE_GRACE", -1, "number of seconds from 0"),
        ("MISFIRE_GRACE", float("nan"), "number of seconds from 0"),
        ("PRUNE_AFTER", 0, "number of seconds above 0"),
        ("PRUNE_INTERVAL", 0, "Use None to turn it off"),
        ("SCHEDULES", [], "must be dict"),
    ],
)
def test_bad_scheduler_settings_fail_the_system_check(setting, value, fragment, settings):
    from django_pgjobs.checks import check_settings

    settings.PGJOBS = {**settings.PGJOBS, setting: value}
    found = [f"{error.msg} {error.hint or ''}" for error in check_settings()]
    assert any(fragment in message for message in found), found


# -- firing ----------------------------------------------------------------------------


def test_a_new_schedule_waits_for_its_first_tick_after_now(scheduler):
    schedule = ScheduleFactory(cron="0 * * * *")
    report = scheduler.run_once(at(10, 30))
    assert report.fired == [] and not Job.objects.exists()
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(11)
    assert report.next_wakeup == at(11)


def test_at_its_tick_a_schedule_enqueues_its_job_records_the_tick_and_plans_the_next(scheduler):
    schedule = hourly()
    enqueued = []
    job_enqueued.connect(receiver := lambda sender, job, **kw: enqueued.append(job.pk))
    try:
        report = scheduler.run_once(at(11, 0, 0.2))
    finally:
        job_enqueued.disconnect(receiver)
    [fired] = report.fired
    job = Job.objects.get()
    assert (fired.fire_at, fired.job_id, fired.next_fire_at) == (at(11), job.pk, at(12))
    assert (job.task, job.args, job.queue) == (schedule.task, schedule.args, "default")
    assert job.meta == {"schedule": schedule.name, "fire_at": "2026-06-01T11:00:00+00:00"}
    assert enqueued == [job.pk], "not enqueued through Job.enqueue"
    tick = ScheduleTick.objects.get()
    assert (tick.schedule, tick.fire_at, tick.job_id, tick.error) == (schedule, at(11), job.pk, "")
    schedule.refresh_from_db()
    assert (schedule.last_fire_at, schedule.next_fire_at) == (at(11), at(12))


def test_a_tick_fires_once_however_often_schedulers_look(scheduler):
    hourly()
    for now in (at(11), at(11), at(11, 0, 1), at(11, 59, 59)):
        Scheduler(routines=[]).run_once(now)
        scheduler.run_once(now)
    assert Job.objects.count() == 1


def test_the_database_refuses_a_second_record_of_the_same_tick():
    schedule = hourly()
    ScheduleTick.objects.create(schedule=schedule, fire_at=at(11), fired_at=at(11))
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduleTick.objects.create(schedule=schedule, fire_at=at(11), fired_at=at(11, 0, 1))


def test_a_tick_set_back_by_hand_does_not_fire_again(scheduler):
    schedule = hourly()
    scheduler.run_once(at(11))
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=at(11))  # someone meddles
    report = scheduler.run_once(at(11, 0, 30))
    assert report.fired[0].fire_at is None
    assert Job.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(12)


def test_latest_fires_once_for_the_ticks_missed_while_no_scheduler_ran(scheduler):
    schedule = hourly(catch_up="latest")
    [fired] = scheduler.run_once(at(15, 20)).fired
    assert (fired.fire_at, fired.missed) == (at(15), 4)
    assert Job.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(16)


def test_none_drops_ticks_missed_beyond_the_grace_period(scheduler):
    hourly(catch_up="none")
    [fired] = scheduler.run_once(at(15, 20)).fired
    assert (fired.fire_at, fired.missed) == (None, 5)
    assert not Job.objects.exists()
    [on_time] = scheduler.run_once(at(16, 0, 30)).fired  # within MISFIRE_GRACE (60 s)
    assert on_time.fire_at == at(16)


def test_disabled_schedules_do_not_fire(scheduler):
    schedule = hourly()
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
    assert scheduler.run_once(at(12)).fired == []
    assert not Job.objects.exists()


def test_queue_and_priority_of_a_schedule_override_the_task_defaults(scheduler):
    hourly(queue="mail", priority=7)
    scheduler.run_once(at(11))
    assert Job.objects.values_list("queue", "priority").get() == ("mail", 7)


def test_a_schedule_whose_task_is_gone_records_why_and_moves_on(scheduler, caplog):
    schedule = hourly()
    other = hourly(name="healthy")
    Schedule.objects.filter(pk=schedule.pk).update(task="testproject.demo.tasks.removed")
    with caplog.at_level(logging.ERROR):
        report = scheduler.run_once(at(11))
    assert {f.schedule: bool(f.error) for f in report.fired} == {
        schedule.name: True,
        "healthy": False,
    }
    tick = ScheduleTick.objects.get(schedule=schedule)
    assert tick.job_id is None and "unknown task" in tick.error
    assert Job.objects.get().args == other.args
    assert scheduler.run_once(at(11, 0, 5)).fired == [], "the failed tick was retried"


def test_a_row_broken_around_save_is_reported_once_and_others_still_fire(scheduler, caplog):
    hourly(name="healthy")
    broken = ScheduleFactory()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pgjobs_schedule SET cron = 'nonsense' WHERE id = %s", [broken.pk])
    with caplog.at_level(logging.ERROR, logger="django_pgjobs.scheduler"):
        scheduler.run_once(at(11))
        scheduler.run_once(at(11, 0, 1))
    assert Job.objects.count() == 1
    assert caplog.text.count("'nonsense'") == 1


@pytest.mark.django_db(transaction=True)
def test_a_schedule_another_scheduler_is_firing_is_skipped_not_waited_for(second_connection):
    ScheduleFactory(cron="0 * * * *")
    Scheduler(routines=[]).run_once(at(10, 30))
    with psycopg.connect(**db.connection_params(), autocommit=False) as other:
        other.execute("SELECT id FROM pgjobs_schedule FOR UPDATE")  # mid-fire elsewhere
        report = Scheduler(routines=[]).run_once(at(11))
        assert report.fired == []
        assert report.next_wakeup == at(11)
        other.rollback()
    assert Scheduler(routines=[]).run_once(at(11)).fired[0].fire_at == at(11)


def test_runscheduler_once_fires_what_is_due_and_exits(settings, caplog):
    from io import StringIO

    from django.core.management import call_command

    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": {}}
    schedule = ScheduleFactory(cron="* * * * *")
    Schedule.objects.filter(pk=schedule.pk).update(
        next_fire_at=datetime.now(UTC).replace(second=0, microsecond=0)
    )
    caplog.set_level(logging.INFO, logger="django_pgjobs")
    out = StringIO()
    call_command("runscheduler", "--once", "--no-maintenance", stdout=out)
    assert Job.objects.count() == 1
    # Said once, through the log (tests/test_worker_output.py: not on stdout as well).
    assert out.getvalue() == ""
    fired = [m for m in caplog.messages if schedule.name in m]
    assert len(fired) == 1 and fired[0].endswith(f" as job {Job.objects.get().pk}"), fired
    assert caplog.messages[-1] == "runscheduler --once: 1 fired"


def test_runscheduler_once_says_which_schedules_it_created_from_settings(settings, caplog):
    # A long-running scheduler logs "created schedule(s) from settings: ..."; --once
    # created them without a word, and said only "fired 0 tick(s)".
    from io import StringIO

    from django.core.management import call_command

    settings.PGJOBS = {
        **settings.PGJOBS,
        "SCHEDULES": {
            "nightly": {"cron": "30 2 * * *", "task": "testproject.demo.tasks.add", "args": [1, 2]}
        },
    }
    caplog.set_level(logging.INFO, logger="django_pgjobs")
    out = StringIO()
    call_command("runscheduler", "--once", "--no-maintenance", stdout=out)
    assert "created schedule(s) from settings: nightly" in caplog.messages
    caplog.clear()
    call_command("runscheduler", "--once", "--no-maintenance", stdout=out)  # exists now
    assert not [m for m in caplog.messages if m.startswith("created schedule")]


def test_runscheduler_once_says_why_a_tick_enqueued_nothing(settings, caplog):
    # Its summary said "job None" of a tick whose task is unknown, and of one its
    # overlap policy skipped, where the log line said why; the log lines alone say it.
    from io import StringIO

    from django.core.management import call_command

    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULES": {}}
    due = datetime.now(UTC).replace(second=0, microsecond=0)
    gone = ScheduleFactory(name="gone", cron="* * * * *", task="tests.tasks_for_tests.none")
    busy = ScheduleFactory(name="busy", cron="* * * * *", overlap="skip")
    running = JobFactory(executing=True)
    Schedule.objects.filter(pk=gone.pk).update(next_fire_at=due)
    Schedule.objects.filter(pk=busy.pk).update(next_fire_at=due, last_job=running)
    caplog.set_level(logging.INFO, logger="django_pgjobs")
    out = StringIO()
    call_command("runscheduler", "--once", "--no-maintenance", stdout=out)
    said = "\n".join(caplog.messages)
    assert "job None" not in said and out.getvalue() == ""
    # At any tick: past a minute's turn since `due`, the scheduler fires the next one
    # (catch_up "latest").
    assert re.search(r"^schedule 'gone': tick \S+ \S+ enqueued nothing: unknown task ", said, re.M)
    busy_line = rf"^schedule 'busy': tick \S+ \S+ skipped: job {running.pk} of this schedule is "
    assert re.search(busy_line, said, re.M), said
    assert caplog.messages[-1] == "runscheduler --once: 1 skipped, 1 failed"
