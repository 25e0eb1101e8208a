"""The scheduler's maintenance thread through a database outage: it backs off and is
woken as the other loops are (outage.py), and says the outage once and its end once
(tests/test_server_restart.py restarts a real server under a whole scheduler)."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest
from django.db import DataError, connection

from django_pgjobs import outage
from django_pgjobs.housekeeping import RoutineSpec
from django_pgjobs.scheduler import Scheduler
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def refused_connection() -> None:
    """Raise what Django raises when the server refuses connections: a real refusal,
    from a port nothing listens on any more."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with connection.wrap_database_errors:
        psycopg.connect(host="127.0.0.1", port=port, connect_timeout=5)


@pytest.fixture
def no_outage() -> Iterator[None]:
    """The scheduler's alias starts and ends this test with no outage on record."""
    outage._states.pop("default", None)
    yield
    outage._states.pop("default", None)


def test_maintenance_retries_are_woken_when_the_database_is_back_and_said_once(no_outage, caplog):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    down = threading.Event()
    down.set()
    failures: list[float] = []
    runs: list[float] = []

    def action(now: datetime) -> int:
        if down.is_set():
            failures.append(time.monotonic())
            refused_connection()
        runs.append(time.monotonic())
        return 0

    scheduler = Scheduler(routines=[RoutineSpec("flaky", timedelta(milliseconds=1), action)])
    thread = threading.Thread(target=scheduler._housekeep, daemon=True)
    thread.start()
    try:
        # Backing off 0.1, 0.2, 0.4, 0.8, 1.6 s, then waiting 3.2 s (before: 5 s each).
        wait_until(lambda: len(failures) >= 6, timeout=8)
        down.clear()
        back_at = time.monotonic()
        scheduler._on_reconnect()  # what the LISTEN connection does once it gets through
        wait_until(lambda: runs, timeout=5)
        assert runs[0] - back_at < 1.0, f"resumed {runs[0] - back_at:.1f}s after"
    finally:
        scheduler.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2, said
    assert said[0].startswith("database 'default' unreachable (connection failed: "), said
    assert said[1].startswith("database 'default' reachable again after "), said
    assert not outage.is_down("default")


def test_the_loop_resumes_as_soon_as_maintenance_gets_through(no_outage):
    """The loop backs off up to 10 s between passes while the database is away; the
    first connection of the process that gets through (here the maintenance thread's)
    ends its wait, as it ends the worker loops', rather than leaving it to the end of
    its own backoff (before: up to 10 s, or a second on the LISTEN connection's
    reconnect, which LISTEN_DATABASE may make another server's)."""
    down = threading.Event()
    down.set()
    failed: list[float] = []
    passes: list[float] = []
    maintained: list[float] = []

    class Failing(Scheduler):
        def _check_in(self) -> None:
            if down.is_set():
                failed.append(time.monotonic())
                refused_connection()
            passes.append(time.monotonic())
            super()._check_in()

    def action(now: datetime) -> int:
        if down.is_set():
            refused_connection()
        maintained.append(time.monotonic())
        return 0

    def looping() -> None:
        try:
            scheduler.loop()
        finally:
            connection.close()  # as Scheduler.shutdown does

    scheduler = Failing(routines=[RoutineSpec("flaky", timedelta(milliseconds=1), action)])
    loop = threading.Thread(target=looping, daemon=True)
    loop.start()
    housekeeper = threading.Thread(target=scheduler._housekeep, daemon=True)
    try:
        # Failed passes 0.1, 0.2, 0.4, 0.8 and 1.6 s apart: the sixth waits 3.2 s.
        wait_until(lambda: len(failed) >= 6, timeout=8)
        housekeeper.start()  # fails once (down), then gets through 0.1 s later
        wait_until(lambda: outage._state("default").failures >= 7, timeout=5)
        down.clear()
        wait_until(lambda: maintained, timeout=5)
        wait_until(lambda: passes, timeout=10)
        lag = passes[0] - maintained[0]
        print(f"the loop resumed {lag * 1000:.0f} ms after maintenance got through")
        assert lag < 1.0, f"the loop resumed {lag:.1f}s after maintenance got through"
        assert len(failed) == 6, failed
    finally:
        scheduler.request_stop()
        loop.join(10)
        housekeeper.join(10)
    assert not loop.is_alive() and not housekeeper.is_alive()
    assert not outage.is_down("default")


@pytest.mark.parametrize(
    "error", [TypeError("a bug of ours"), DataError("a row no statement expected")]
)
def test_an_error_no_outage_explains_is_said_once_and_the_loop_goes_on(
    no_outage, caplog, monkeypatch, error
):
    """The loop caught a lost connection only: any other error of a pass (a bug of
    ours meeting an odd row, a statement the server refused) ended it, and with it the
    scheduler. Now it is said once with its traceback, and the loop backs off and
    passes again."""
    from django_pgjobs import schedules

    buggy = threading.Event()
    buggy.set()
    raised: list[float] = []
    passed: list[float] = []
    fire_due = schedules.fire_due

    def with_a_bug(*args: object, **kwargs: object) -> object:
        if buggy.is_set():
            raised.append(time.monotonic())
            raise error
        passed.append(time.monotonic())
        return fire_due(*args, **kwargs)

    monkeypatch.setattr(schedules, "fire_due", with_a_bug)
    scheduler = Scheduler(routines=[], max_sleep=timedelta(seconds=0.2))

    def looping() -> None:
        try:
            scheduler.loop()
        finally:
            connection.close()

    loop = threading.Thread(target=looping, daemon=True)
    loop.start()
    try:
        wait_until(lambda: len(raised) >= 3, timeout=10)
        assert loop.is_alive()
        buggy.clear()
        wait_until(lambda: len(passed) >= 2, timeout=15)
    finally:
        scheduler.request_stop()
        loop.join(10)
    assert not loop.is_alive()
    gaps = [later - earlier for earlier, later in itertools.pairwise(raised)]
    assert min(gaps) >= 0.04, gaps  # backed off, not a busy loop
    said = [r for r in caplog.records if str(error) in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelname == "ERROR" and said[0].exc_info is not None


@pytest.mark.parametrize(
    "error", [TypeError("a bug of ours"), DataError("a row no statement expected")]
)
def test_a_bug_in_maintenance_is_said_once_and_its_thread_goes_on(
    no_outage, caplog, monkeypatch, error
):
    """The maintenance thread caught database errors only: any other (a bug of ours
    planning its next run) ended it silently, and rescue and prune stopped. A database's
    error no outage explains (a statement the server refused) was said again every 5 s
    while it lasted: now once, as a bug is."""
    from django_pgjobs import housekeeping

    buggy = threading.Event()
    buggy.set()
    raised: list[float] = []
    runs: list[float] = []
    next_due_at = housekeeping.next_due_at

    def with_a_bug(*args: object, **kwargs: object) -> object:
        if buggy.is_set():
            raised.append(time.monotonic())
            raise error
        return next_due_at(*args, **kwargs)

    def action(now: datetime) -> int:
        runs.append(time.monotonic())
        return 0

    monkeypatch.setattr(housekeeping, "next_due_at", with_a_bug)
    scheduler = Scheduler(routines=[RoutineSpec("often", timedelta(milliseconds=1), action)])
    thread = threading.Thread(target=scheduler._housekeep, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(raised) >= 2, timeout=15)
        assert thread.is_alive()
        buggy.clear()
        ran = len(runs)
        wait_until(lambda: len(runs) > ran + 1, timeout=15)
    finally:
        scheduler.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    said = [r for r in caplog.records if str(error) in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelname == "ERROR" and said[0].exc_info is not None
