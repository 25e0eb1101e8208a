"""outage.py's rules, without a server to stop: what starts an outage, what ends it,
what is said (tests/test_server_restart.py restarts a real one)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError
from hypothesis import given
from hypothesis import strategies as st

from django_pgjobs import outage

REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
    "connections?"
)
LOST = "consuming input failed: server closed the connection unexpectedly\n\tThis probably..."


def wrapped(message: str) -> OperationalError:
    """As Django raises it: its OperationalError, caused by psycopg's."""
    error = OperationalError(message)
    error.__cause__ = psycopg.OperationalError(message)
    return error


@pytest.fixture
def alias() -> Iterator[str]:
    name = f"outage-test-{time.monotonic_ns()}"
    yield name
    outage._states.pop(name, None)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_refused_connection_is_said_once_and_its_end_once(alias, caplog):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    began = time.monotonic()
    for _ in range(5):
        outage.unreachable(alias, wrapped(REFUSED))
    assert outage.is_down(alias)
    outage.reachable(alias, began)  # begun before the outage was noticed: proves nothing
    assert outage.is_down(alias)
    outage.reachable(alias, time.monotonic())
    outage.reachable(alias, time.monotonic())  # said once
    said = warnings(caplog)
    assert len(said) == 2, said
    assert said[0].startswith(f"database {alias!r} unreachable (connection failed: ")
    assert "Is the server running" not in said[0]  # libpq's hint line
    assert said[1].startswith(f"database {alias!r} reachable again after ")
    assert "(5 failed attempt(s) meanwhile)" in said[1]
    assert not outage.is_down(alias)


def test_a_lost_connection_alone_is_no_outage(alias, caplog):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    outage.unreachable(alias, wrapped(LOST))
    outage.reachable(alias, time.monotonic())
    assert not outage.is_down(alias) and warnings(caplog) == []
    assert "server closed the connection unexpectedly" in caplog.text  # at DEBUG


@pytest.mark.parametrize(
    "error",
    [
        wrapped(REFUSED),
        wrapped(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            "FATAL:  the database system is starting up"
        ),
        wrapped(
            'connection failed: connection to server on socket "/run/postgresql/.s.PGSQL'
            '.5432" failed: No such file or directory'
        ),
        wrapped("connection is bad: connection pointer is NULL"),
        psycopg.errors.ConnectionTimeout("connection timeout expired"),
    ],
    ids=["refused", "starting up", "no socket", "bad", "timed out"],
)
def test_a_connection_attempt_that_failed_is_refused(error):
    assert outage.is_refused(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(LOST),
        # libpq names "connection to server" on a lost connection too.
        wrapped('consuming input failed: connection to server at "127.0.0.1" was lost'),
        wrapped("sending query failed: connection to server was lost"),
        wrapped("the connection is closed"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        OperationalError('connection failed: connection to server at "x", port 1 failed'),
    ],
    ids=["closed", "lost at", "lost", "closed here", "terminated", "not psycopg's"],
)
def test_a_connection_lost_after_it_was_made_is_not_refused(error):
    assert not outage.is_refused(error)


def test_a_real_refusal_is_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=port, connect_timeout=5)
    assert outage.is_refused(refused.value), refused.value


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.DiskFull("could not extend file: No space left on device"),
    ],
    ids=["read-only after a failover", "statement_timeout", "disk full"],
)
def test_a_statement_the_server_refuses_is_a_warning_each_time(alias, caplog, error):
    """No lost connection, and the retries may never get past it (a worker pointed at a
    standby after a failover claims nothing): said at DEBUG, it left a stuck worker,
    or a completer retrying its outcomes for ever, with nothing in the log."""
    wrapper = OperationalError(str(error))
    wrapper.__cause__ = error
    outage.unreachable(alias, wrapper)
    outage.unreachable(alias, wrapper)
    said = warnings(caplog)
    assert len(said) == 2 and str(error) in said[0], said
    assert not outage.is_down(alias)


def test_connections_lost_again_and_again_are_said_at_most_once_a_minute(
    alias, caplog, monkeypatch
):
    """One terminated session is routine (idle_session_timeout, a cleanup); a process
    whose sessions something keeps ending said nothing at the default level, however
    long it went on: each loss was at DEBUG."""
    now = [1000.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: now[0])
    for _ in range(outage.LOST_OFTEN - 1):
        outage.unreachable(alias, wrapped(LOST))
        now[0] += 1
    assert warnings(caplog) == []
    outage.unreachable(alias, wrapped(LOST))
    said = warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith(
        f"database {alias!r}: {outage.LOST_OFTEN} connection(s) of this process lost in"
        " the last 19s, each reopened (the latest: consuming input failed: server closed"
        " the connection unexpectedly)"
    ), said
    assert "pg_terminate_backend" in said[0] and "This probably" not in said[0]
    for _ in range(30):  # within the minute: counted, not said
        now[0] += 1
        outage.unreachable(alias, wrapped(LOST))
    assert len(warnings(caplog)) == 1
    now[0] += 30  # a minute after the first line
    outage.unreachable(alias, wrapped(LOST))
    said = warnings(caplog)
    assert len(said) == 2 and " connection(s) of this process lost in the last 60s" in said[1]
    assert not outage.is_down(alias)


def test_connections_lost_now_and_then_are_not_said(alias, caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: now[0])
    for _ in range(5 * outage.LOST_OFTEN):
        outage.unreachable(alias, wrapped(LOST))
        now[0] += 2 * outage.REMIND_EVERY / outage.LOST_OFTEN
    assert warnings(caplog) == []


def test_a_long_outage_is_recalled_every_so_often(alias, caplog, monkeypatch):
    monkeypatch.setattr(outage, "REMIND_EVERY", 0.0)
    outage.unreachable(alias, wrapped(REFUSED))
    outage.unreachable(alias, wrapped(REFUSED))
    assert "still unreachable after" in warnings(caplog)[-1]


def test_a_pause_ends_when_another_thread_gets_through(alias):
    outage.unreachable(alias, wrapped(REFUSED))
    done = threading.Event()

    def another_thread() -> None:  # whenever the pause begins, it is ended soon after
        while not done.wait(0.05):
            outage.retry_now(alias)

    thread = threading.Thread(target=another_thread)
    thread.start()
    began = time.monotonic()
    try:
        outage.pause(alias, 30)
    finally:
        done.set()
        thread.join(5)
    assert time.monotonic() - began < 5


def test_a_pause_is_not_cut_short_by_an_earlier_recovery(alias):
    """A persistent error that is no refusal (an XX error, say) must not spin."""
    outage.retry_now(alias)
    began = time.monotonic()
    outage.pause(alias, 0.3)
    assert time.monotonic() - began >= 0.29


def test_a_pause_ends_at_once_when_another_thread_got_through_during_the_attempt(alias):
    """The pause after a failed attempt began to wait from its own start: a thread that
    got through while the attempt was under way (its connect refused a moment before)
    went unnoticed, and the retry waited out its backoff (tests/test_scheduler_outage.py
    failed so, in one run, by 3 s)."""
    seen = outage.generation(alias)  # the attempt begins
    outage.unreachable(alias, wrapped(REFUSED))  # ...and fails
    outage.retry_now(alias)  # meanwhile, another thread got through
    began = time.monotonic()
    outage.pause(alias, 5, since=seen)
    assert time.monotonic() - began < 0.5
    began = time.monotonic()
    outage.pause(alias, 0.3, since=outage.generation(alias))  # nothing since: waits
    assert time.monotonic() - began >= 0.29


@given(
    st.floats(min_value=0.0, max_value=3600.0),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_a_spread_wait_is_between_half_and_all_of_it(seconds, draw):
    """What keeps a fleet's retries (claim loops, scheduler, LISTEN) out of step."""
    waited = outage.spread(seconds, draw)
    assert seconds / 2 <= waited <= seconds
    assert outage.spread(seconds, 0.0) == seconds / 2


def test_spread_draws_reach_across_the_range():
    draws = [0.0, 0.25, 0.5, 0.75, 0.999]
    waits = [outage.spread(10.0, d) for d in draws]
    assert waits == sorted(waits) and waits[0] == 5.0 and waits[-1] > 9.99
    drawn = {outage.spread(10.0) for _ in range(200)}  # the draw a retry makes itself
    assert all(5.0 <= wait <= 10.0 for wait in drawn) and len(drawn) > 1


def test_a_doubling_delay_starts_small_doubles_and_stops_at_its_cap():
    """The retries of a worker's claims, outcomes, hand-backs and loop, and of the
    scheduler's: 0.1 s after the first failure, twice as long after each next one."""
    backoff = outage.Doubling(cap=1.0)
    assert backoff.delay == 0.1 and backoff.failures == 0
    waits = [backoff.failed() for _ in range(7)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert backoff.failures == 7 and backoff.delay == 1.0


def test_a_doubling_delay_reset_starts_again_from_the_first():
    backoff = outage.Doubling(cap=10.0, first=0.5)
    backoff.failed(), backoff.failed()
    assert backoff.delay == 2.0 and backoff.failures == 2
    backoff.reset()
    assert backoff.delay == 0.5 and backoff.failures == 0
    assert backoff.failed() == 0.5


def test_a_doubling_delay_is_the_arithmetic_it_replaces():
    """Same floats as ``delay = min(delay * 2, cap)`` from 0.1: log lines show them."""
    backoff, delay = outage.Doubling(cap=10.0), 0.1
    for _ in range(10):
        assert backoff.failed() == delay
        delay = min(delay * 2, 10.0)


@pytest.fixture
def unreachable_alias(django_db_blocker: Any) -> Iterator[str]:
    """A database alias whose server refuses every connection (nothing listens on
    port 1)."""
    from django.db import connections

    name = f"unreachable-{time.monotonic_ns()}"
    connections.settings[name] = {**connections.settings["default"], "PORT": "1"}
    with django_db_blocker.unblock():  # it never gets as far as a database
        yield name
    connections[name].close()
    del connections.settings[name]
    outage._states.pop(name, None)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits handed to ``outage.spread`` (which still draws as it does)."""
    asked: list[float] = []
    real = outage.spread

    def recorded(seconds: float, draw: float | None = None) -> float:
        asked.append(seconds)
        return real(seconds, draw)

    monkeypatch.setattr(outage, "spread", recorded)
    return asked


def test_the_publisher_draws_its_waits_and_keeps_its_whole_budget(unreachable_alias, drawn, caplog):
    """A fleet's publishers lose the server together: their retries are drawn (out of
    step), and counted in time, so the shorter draws don't drop events sooner."""
    from django_pgjobs import events

    publisher = events.Publisher(unreachable_alias)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="django_pgjobs"):
        publisher._send([(("t", "default", "available", None, 0), [1, 2])])
    took = time.monotonic() - began
    assert drawn[:3] == list(events.PUBLISH_RETRY_WAITS)
    assert events.PUBLISH_RETRY_FOR - 0.05 <= took < events.PUBLISH_RETRY_FOR + 2.0
    assert any("dropped 1 job event(s)" in m for m in caplog.messages)


def test_an_outcome_write_draws_its_waits(unreachable_alias, drawn):
    from django.db import connections

    from django_pgjobs import execution

    def write() -> None:
        connections[unreachable_alias].ensure_connection()

    assert execution.through_outage(write, "write an outcome", give_up_after=0.5) is None
    assert drawn[:3] == [0.1, 0.2, 0.4]
