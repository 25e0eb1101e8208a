"""Noticing a dead network path: TCP keepalives, connection names, a listener check, a watchdog.

A connection whose path goes silent without FIN or RST (a NAT timeout, a
failover, a pulled cable) looks open for as long as nothing is sent, and a send
waits for TCP's retransmissions, which give up after many minutes. Workers and
schedulers bound both: keepalives probe an idle socket, ``tcp_user_timeout``
bounds a send, the listener asks its connection a question on an interval, and
a worker whose heartbeat could not be written for ``WORKER_STALE_AFTER`` exits
with ``EXIT_STALE`` for its supervisor to restart it, whatever its sockets do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.db import connections
from django.db.models import Q
from django.db.models.functions import Now

from . import conf, limits

logger = logging.getLogger(__name__)

#: Exit status of a worker whose heartbeat could not be written for longer than
#: WORKER_STALE_AFTER (EX_TEMPFAIL): its jobs were presumed lost and taken by
#: others; a supervisor (systemd's Restart=, Kubernetes) should start it again.
EXIT_STALE = 75

#: libpq options given to the connections of worker and scheduler processes unless
#: the database's OPTIONS set them: an idle connection is probed after 10 s of
#: silence and declared dead 3 unanswered probes later; data sent and not
#: acknowledged for 30 s breaks the connection; a connect gives up after 10 s.
CONNECTION_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
    "connect_timeout": 10,
}


def alive(stale_after: timedelta, now: datetime | None = None) -> Q:
    """The process rows (``WorkerProcess``, ``SchedulerProcess``) of processes alive by
    their heartbeat: one no older than ``stale_after`` before ``now`` (by default the
    database's clock, ``Now()``, which stamps heartbeats) and no further ahead of it.
    No live process's heartbeat is ahead of the database's clock: a row written by
    SQL in the year 9999 hid for ever that no scheduler ran (rescue already took such
    a worker for dead: sql/rescue.sql). Within ``stale_after`` ahead still counts: a
    ``now`` that lags the database's (a web host's clock) sees fresh ones ahead.
    A given ``now`` is checked as ``drain(now=)``'s is (``limits.given_now``)."""
    now = limits.given_now(now)
    if now is None:
        return Q(heartbeat_at__gte=Now() - stale_after, heartbeat_at__lte=Now() + stale_after)
    earliest, latest = _bounds(now, stale_after)
    alive = Q()
    if earliest is not None:
        alive &= Q(heartbeat_at__gte=earliest)
    if latest is not None:
        alive &= Q(heartbeat_at__lte=latest)
    return alive


def is_alive(heartbeat_at: datetime, now: datetime, stale_after: timedelta) -> bool:
    """``alive`` for a heartbeat already read: within ``stale_after`` of ``now``,
    either way."""
    earliest, latest = _bounds(now, stale_after)
    return (earliest is None or heartbeat_at >= earliest) and (
        latest is None or heartbeat_at <= latest
    )


def _bounds(now: datetime, stale_after: timedelta) -> tuple[datetime | None, datetime | None]:
    """``now`` ∓ ``stale_after``; None past the ends of time (no OverflowError)."""
    try:
        earliest: datetime | None = now - stale_after
    except OverflowError:
        earliest = None
    try:
        latest: datetime | None = now + stale_after
    except OverflowError:
        latest = None
    return earliest, latest


def harden_connections(using: str, role: str) -> str:
    """Give this process's connections to ``using`` the ``CONNECTION_OPTIONS`` and an
    ``application_name`` naming ``role``, host and pid (what the DATABASES entry sets
    wins). Call before the process connects; returns the application_name."""
    options = connections.settings[using].setdefault("OPTIONS", {})
    for key, value in CONNECTION_OPTIONS.items():
        options.setdefault(key, value)
    name = f"pgjobs {role} {conf.host_name()}:{os.getpid()}"
    # PostgreSQL keeps 63 bytes of it; the pid at the end matters most.
    options.setdefault("application_name", name[-63:])
    # Connections already open keep their options (closing them here would break a
    # caller's transaction, as call_command in a test's): the command opens its own.
    return options["application_name"]


def answers(conn: psycopg.Connection, timeout: float) -> bool:
    """Whether ``conn`` answers ``SELECT 1`` within ``timeout`` seconds.

    Done by hand on the non-blocking libpq connection, because a plain execute on
    a silent path would wait for TCP to give up. Only for a connection that runs
    nothing else meanwhile (the listener's, between its waits).
    """
    pgconn = conn.pgconn
    deadline = time.monotonic() + timeout
    try:
        pgconn.send_query(b"SELECT 1")
        while pgconn.flush():  # 1: more to send
            if not _ready(pgconn.socket, deadline, write=True):
                return False
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            if not _ready(pgconn.socket, deadline):
                return False
        ok = True
        while (result := pgconn.get_result()) is not None:
            ok = ok and result.status == psycopg.pq.ExecStatus.TUPLES_OK
        return ok
    except (psycopg.Error, OSError):
        return False


def _ready(fd: int, deadline: float, *, write: bool = False) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    if write:
        return bool(select.select([], [fd], [], remaining)[1])
    return bool(select.select([fd], [], [], remaining)[0])


def exit_stale(worker_id: object, silent_for: float, limit: float) -> None:
    """End the process now: its heartbeat has not been written for ``silent_for``
    seconds, more than ``limit``; others take its jobs. Not a clean shutdown: that
    would wait on the same dead connections."""
    logger.critical(
        "worker %s: no heartbeat written for %.0fs (WORKER_STALE_AFTER is %.0fs): its jobs "
        "are presumed lost and taken by other workers; exiting with status %d so that a "
        "supervisor restarts it",
        worker_id,
        silent_for,
        limit,
        EXIT_STALE,
    )
    for handler in logging.getLogger().handlers + logging.getLogger("django_pgjobs").handlers:
        with contextlib.suppress(Exception):  # exiting regardless
            handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STALE)
