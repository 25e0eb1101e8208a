"""A fleet's LISTEN connections while the database is down: their reconnects drift
apart, stay at most a second apart in a short outage, and end as soon as another
connection of their process gets through (bench/fleet_reconnects.py measures 200)."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from django_pgjobs import outage
from django_pgjobs.notifier import (
    LONG_OUTAGE,
    RECONNECT_CEILING,
    RECONNECT_CEILING_LONG,
    Notifier,
    reconnect_delay,
)
from tests.conftest import wait_until


def refusing_port() -> int:
    """A port nothing listens on: connections to it are refused, as a stopped server's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Counted(Notifier):
    """A real notifier, against a port that refuses, that notes when it tries."""

    def __init__(self, alias: str, port: int) -> None:
        super().__init__(["pgjobs_jobs"], lambda channel, payload: None)
        self.using = alias
        self.params = {**self.params, "host": "127.0.0.1", "port": port, "connect_timeout": 5}
        self.attempts: list[float] = []

    def _listen(self) -> psycopg.Connection:
        self.attempts.append(time.monotonic())
        return super()._listen()


@pytest.fixture
def fleet() -> Iterator[list[Counted]]:
    alias = f"fleet-test-{time.monotonic_ns()}"
    port = refusing_port()
    notifiers = [Counted(alias, port) for _ in range(20)]
    for notifier in notifiers:
        notifier.start()
    yield notifiers
    for notifier in notifiers:
        notifier._stop.set()
    for notifier in notifiers:
        notifier.stop(5)
    outage._states.pop(alias, None)


@pytest.mark.parametrize("spread", [0.0, 0.5, 0.999])
def test_reconnect_waits_are_spread_below_a_ceiling_that_rises_in_a_long_outage(spread):
    waits = [reconnect_delay(n, 5.0, spread) for n in range(1, 40)]
    assert waits[0] <= 0.1
    assert all(a <= b for a, b in itertools.pairwise(waits))
    assert RECONNECT_CEILING / 2 <= waits[-1] <= RECONNECT_CEILING
    long = reconnect_delay(39, LONG_OUTAGE + 1, spread)
    assert RECONNECT_CEILING_LONG / 2 <= long <= RECONNECT_CEILING_LONG
    assert reconnect_delay(10**9, 3600.0, spread) <= RECONNECT_CEILING_LONG


def test_a_fleets_reconnects_drift_apart_and_stay_within_a_second(fleet):
    """The notifiers of a fleet all lose the server at once: with waits of fixed length
    their seventh attempts came within milliseconds of each other (3.5 s after the
    first), as did every later one."""
    wait_until(lambda: all(len(n.attempts) >= 7 for n in fleet), timeout=15)
    seventh = [n.attempts[6] - n.attempts[0] for n in fleet]
    assert max(seventh) - min(seventh) > 0.25, sorted(seventh)
    gaps = [b - a for n in fleet for a, b in itertools.pairwise(n.attempts)]
    # A second at most (and what a loaded box adds): a worker's claims wait for it.
    assert max(gaps) < RECONNECT_CEILING + 0.4, max(gaps)


def test_a_reconnect_is_tried_at_once_when_another_connection_gets_through(fleet):
    """A worker's heartbeat or claim loop got through: its LISTEN connection, a second
    apart by then, tries again at once rather than at the end of its wait."""
    notifier = fleet[0]
    wait_until(lambda: len(notifier.attempts) >= 6, timeout=10)  # past 0.1, 0.2, 0.4...
    done = threading.Event()

    def another_thread() -> None:  # whenever a wait begins, it is ended soon after
        while not done.wait(0.05):
            outage.retry_now(notifier.using)

    thread = threading.Thread(target=another_thread)
    thread.start()
    try:
        tried = len(notifier.attempts)
        wait_until(lambda: len(notifier.attempts) >= tried + 5, timeout=2)
    finally:
        done.set()
        thread.join(5)
