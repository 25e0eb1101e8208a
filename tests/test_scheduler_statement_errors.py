"""The scheduler through a statement's own failure: a statement timeout (57014), a lock
timeout (55P03), a deadlock (40P01), a serialization failure (40001). OperationalErrors,
which the scheduler took for a lost connection (a warning of an outage on every retry);
told by their SQLSTATE now (``db.connection_trouble``, ``db.transient``): said once
while they repeat, backed off from, and a tick they hit is rolled back and fired once,
later, not recorded as failed."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import DatabaseError, connection

from django_pgjobs import db, outage, schedules
from django_pgjobs.housekeeping import RoutineSpec
from django_pgjobs.models import Job, Schedule, ScheduleTick
from django_pgjobs.scheduler import Scheduler
from tests.conftest import wait_until
from tests.factories import ScheduleFactory
from tests.site_database import outage_warnings, time_out, trigger_sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def at(hour: int, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, 6, 1, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


@pytest.fixture
def no_outage() -> Iterator[None]:
    outage._states.pop("default", None)
    yield
    outage._states.pop("default", None)


def said(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "django_pgjobs.scheduler" and f"{what} failed" in r.getMessage()
    ]


def looping(scheduler: Scheduler, sleep: float = 0.05) -> threading.Thread:
    def sleep_until(when: datetime) -> None:
        scheduler.wakeup.wait(sleep)

    def run() -> None:
        try:
            scheduler.loop(sleep_until)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- the loop and maintenance: said once, no outage -----------------------------------


def test_a_statement_timeout_in_a_scheduler_pass_is_said_once_no_outage(
    no_outage, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.scheduler")
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    timed_out: list[float] = []
    passed: list[float] = []
    real = schedules.fire_due

    def fire_due(now: datetime, *, using: str, **options: object) -> object:
        if len(timed_out) < 4:
            timed_out.append(time.monotonic())
            time_out(using)
        passed.append(time.monotonic())
        return real(now, using=using, **options)

    monkeypatch.setattr(schedules, "fire_due", fire_due)
    scheduler = Scheduler(routines=[], max_sleep=timedelta(seconds=0.2))
    thread = looping(scheduler)
    try:
        wait_until(lambda: len(timed_out) >= 4 and len(passed) >= 2, timeout=30)
    finally:
        scheduler.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    failures = said(caplog, "a scheduler pass")
    errors = [r for r in failures if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and len(failures) >= 4, [r.getMessage() for r in failures]
    assert "statement timeout" in errors[0].getMessage()
    # And when it ended, once: "carrying on" alone left the log saying it still failed.
    back = [r.getMessage() for r in caplog.records if "went through again" in r.getMessage()]
    assert len(back) == 1 and re.fullmatch(
        r"a scheduler pass went through again after \d+\.\ds \(4 failed pass\(es\) meanwhile\)",
        back[0],
    ), back
    assert not outage_warnings(caplog)


def test_a_statement_timeout_in_maintenance_is_said_once_no_outage(no_outage, caplog):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.scheduler")
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    timed_out: list[float] = []
    runs: list[float] = []

    def action(now: datetime) -> int:
        if len(timed_out) < 3:
            timed_out.append(time.monotonic())
            time_out()
        runs.append(time.monotonic())
        return 0

    scheduler = Scheduler(routines=[RoutineSpec("often", timedelta(milliseconds=1), action)])
    thread = threading.Thread(target=scheduler._housekeep, daemon=True)
    thread.start()
    try:
        # Maintenance retries a failure after 5 s: three of them, then a run.
        wait_until(lambda: len(timed_out) >= 3 and runs, timeout=30)
    finally:
        scheduler.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    failures = said(caplog, "maintenance")
    errors = [r for r in failures if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and len(failures) >= 3, [r.getMessage() for r in failures]
    assert "statement timeout" in errors[0].getMessage()
    assert not outage_warnings(caplog)


# -- a tick a transient statement error hits: rolled back, fired once later -----------

# A site's trigger on the job table that fails a tick's enqueue as the gate row says:
# with a SQLSTATE raised as the server would (a deadlock, a serialization failure, a
# plain refusal), or, for 'lock', with a real lock timeout on a row the test holds;
# the jobs of every schedule, or of the one it names.
GATE_TABLE = """
CREATE TABLE pgjobs_tick_gate (id int PRIMARY KEY, code text, schedule text);
INSERT INTO pgjobs_tick_gate VALUES (1, NULL, NULL), (2, NULL, NULL);
"""
GATE = trigger_sql(
    "pgjobs_tick_gate",
    """
    IF gated IS NOT NULL AND NEW.meta->>'schedule' IS DISTINCT FROM gated THEN
        RETURN NEW;
    ELSIF code = 'lock' THEN
        PERFORM set_config('lock_timeout', '100ms', true);
        PERFORM 1 FROM pgjobs_tick_gate WHERE id = 2 FOR UPDATE;
    ELSIF code IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = 'the gate says ' || code;
    END IF;""",
    event="INSERT",
    declare="""
    code text := (SELECT g.code FROM pgjobs_tick_gate g WHERE g.id = 1);
    gated text := (SELECT g.schedule FROM pgjobs_tick_gate g WHERE g.id = 1);""",
)

Gate = Callable[..., None]


@pytest.fixture
def gate(site_sql) -> Gate:
    site_sql(GATE_TABLE, "DROP TABLE IF EXISTS pgjobs_tick_gate")
    site_sql(*GATE)

    def close(code: str | None, schedule: str | None = None) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE pgjobs_tick_gate SET code = %s, schedule = %s WHERE id = 1",
                [code, schedule],
            )

    return close


@pytest.fixture
def holder() -> Iterator[psycopg.Connection]:
    """Holds the gate's row 2 locked while its transaction is open."""
    conn = psycopg.connect(**db.connection_params())
    yield conn
    conn.close()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("40P01", "the gate says 40P01"),
        ("40001", "the gate says 40001"),
        ("lock", "canceling statement due to lock timeout"),
    ],
)
def test_a_tick_a_transient_error_hits_is_lost_not_and_fires_once_after(
    no_outage, caplog, gate, holder, code, message
):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.scheduler")
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    schedule = ScheduleFactory(cron="0 * * * *")
    Scheduler(routines=[]).run_once(at(10, 30))  # planned for 11:00
    gate(code)
    if code == "lock":
        holder.execute("SELECT 1 FROM pgjobs_tick_gate WHERE id = 2 FOR UPDATE")
    scheduler = Scheduler(
        routines=[], clock=lambda: at(11, 0, 30), max_sleep=timedelta(seconds=0.2)
    )
    thread = looping(scheduler)
    try:
        wait_until(lambda: len(said(caplog, "a scheduler pass")) >= 3, timeout=30)
        # Rolled back: no tick on record, none marked failed, no job.
        assert not ScheduleTick.objects.filter(schedule=schedule).exists()
        assert not Job.objects.exists()
        gate(None)
        holder.rollback()
        wait_until(lambda: ScheduleTick.objects.filter(schedule=schedule).exists(), timeout=15)
        passes = len(said(caplog, "a scheduler pass"))
        time.sleep(0.5)  # more passes, with the clock still at 11:00:30
    finally:
        scheduler.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    [tick] = ScheduleTick.objects.filter(schedule=schedule)
    assert (tick.fire_at, tick.error) == (at(11), "")
    assert tick.job_id is not None and Job.objects.count() == 1
    schedule.refresh_from_db()
    assert (schedule.next_fire_at, schedule.last_fire_at) == (at(12), at(11))
    assert len(said(caplog, "a scheduler pass")) == passes  # the passes since went through
    failures = said(caplog, "a scheduler pass")
    errors = [r for r in failures if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in failures]
    assert message in errors[0].getMessage()
    assert not outage_warnings(caplog)
    assert scheduler.stats["fired"] == 1 and not scheduler.stats["failed"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("40P01", "the gate says 40P01"),
        ("lock", "canceling statement due to lock timeout"),
    ],
)
def test_a_transient_error_on_one_tick_rolls_back_that_tick_alone(
    no_outage, gate, holder, code, message
):
    """The batch's other ticks commit: one schedule's deadlock or lock timeout rolled
    back every tick of its batch (up to 100), none recorded, on every pass it lasted."""
    for name in ("a", "b", "c"):  # b between the others, in the batch's order
        ScheduleFactory(name=name, cron="0 * * * *")
    Scheduler(routines=[]).run_once(at(10, 30))
    gate(code, "b")
    if code == "lock":
        holder.execute("SELECT 1 FROM pgjobs_tick_gate WHERE id = 2 FOR UPDATE")
    scheduler = Scheduler(routines=[])
    with pytest.raises(DatabaseError, match=message):  # said by the loop, backed off
        scheduler.run_once(at(11, 0, 30))
    fired = ScheduleTick.objects.filter(job__isnull=False, error="")
    assert sorted(fired.values_list("schedule__name", flat=True)) == ["a", "c"]
    assert ScheduleTick.objects.count() == 2 and Job.objects.count() == 2
    assert scheduler.stats["fired"] == 2 and not scheduler.stats["failed"]
    gate(None)
    holder.rollback()
    scheduler.run_once(at(11, 0, 40))
    scheduler.run_once(at(11, 0, 50))
    ticks = ScheduleTick.objects.order_by("schedule__name")
    assert [(t.schedule.name, t.fire_at, t.error) for t in ticks] == [
        (name, at(11), "") for name in ("a", "b", "c")
    ]
    assert all(t.job_id for t in ticks) and Job.objects.count() == 3
    assert set(Schedule.objects.values_list("next_fire_at", "last_fire_at")) == {(at(12), at(11))}
    assert scheduler.stats["fired"] == 3 and not scheduler.stats["failed"]


@pytest.mark.parametrize(
    "code",
    [
        "P0001",  # a site's plain RAISE EXCEPTION
        "55000",  # an OperationalError by class, no transient one: as any refusal
    ],
)
def test_a_tick_a_refusal_hits_is_recorded_failed_once(no_outage, caplog, gate, code):
    """A refusal that no retry gets past is marked on the tick, as before, and holds
    up no other schedule; an OperationalError of another SQLSTATE was retried on every
    pass for good, as an outage."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    schedule = ScheduleFactory(cron="0 * * * *")
    Scheduler(routines=[]).run_once(at(10, 30))
    gate(code)
    scheduler = Scheduler(routines=[])
    scheduler.run_once(at(11, 0, 30))
    scheduler.run_once(at(11, 0, 40))
    [tick] = ScheduleTick.objects.filter(schedule=schedule)
    assert tick.fire_at == at(11) and f"the gate says {code}" in tick.error
    assert tick.job_id is None and not Job.objects.exists()
    assert scheduler.stats["failed"] == 1
    assert not outage_warnings(caplog)
