"""A LISTEN connection that turns PostgreSQL notifications into callbacks.

It runs on its own thread with its own connection (a listening connection
can't be shared with queries). When the connection drops it reconnects with
backoff (``reconnect_delay``) and reports the reconnect, because notifications
sent while it was away are lost: the listener must then re-read the truth from
the tables. A connection whose network path went silent drops nothing and hears
nothing, so with ``check_every`` it also asks its connection a question on that
interval and reconnects when no answer comes (see liveness.py).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from . import db, liveness, outage

logger = logging.getLogger(__name__)

#: Payload: a queue name. Sent on commit when runnable jobs appear in it, or its settings change.
JOBS_CHANNEL = "pgjobs_jobs"

#: Seconds before the first reconnect; each next one waits twice as long, up to a ceiling.
RECONNECT_FIRST = 0.1
#: The ceiling in an outage's first LONG_OUTAGE seconds (a restart, a failover)...
RECONNECT_CEILING = 1.0
#: ...and after them, which halves what a fleet tries meanwhile.
RECONNECT_CEILING_LONG = 2.0
LONG_OUTAGE = 30.0


def reconnect_delay(failures: int, down_for: float, spread: float) -> float:
    """Seconds to wait after ``failures`` (1-based) failed connection attempts in a
    row, ``down_for`` seconds into an outage (outage.down_for), ``spread`` in [0, 1).

    Every process of a fleet loses the server at the same moment; waits of a fixed
    length kept them in step (20 processes of a host tried within 100 ms of each
    other, once a second), and so they met a server coming back all at once. Drawn
    between half the wait and the whole of it, each process's attempts drift apart
    within a few seconds. The ceiling bounds how long a process waits once the server
    is back (its other loops wait for the first of its connections to get through,
    outage.pause): within a second for an outage as long as a restart, two seconds
    past LONG_OUTAGE."""
    ceiling = RECONNECT_CEILING if down_for < LONG_OUTAGE else RECONNECT_CEILING_LONG
    wait = min(RECONNECT_FIRST * 2 ** min(max(failures, 1) - 1, 32), ceiling)
    return outage.spread(wait, spread)


class Notifier:
    def __init__(
        self,
        channels: Iterable[str],
        on_notify: Callable[[str, str], None],
        on_reconnect: Callable[[], None] = lambda: None,
        *,
        using: str | None = None,
        check_every: float | None = None,
    ) -> None:
        self.channels = list(channels)
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.params = db.connection_params(using)
        self.using = using or db.alias()
        self.check_every = check_every
        #: Reconnects since start (a silent path, a dropped connection).
        self.reconnects = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgjobs-notifier", daemon=True)
        self._conn: psycopg.Connection | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (tests terminate it)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def _listen(self) -> psycopg.Connection:
        params = dict(self.params)
        if "application_name" in params:  # named by liveness.harden_connections
            params["application_name"] = f"{params['application_name'][:56]} listen"
        conn = psycopg.connect(**params, autocommit=True)
        for channel in self.channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    def _run(self) -> None:
        failures = 0
        first = True
        while not self._stop.is_set():
            began, seen = time.monotonic(), outage.generation(self.using)
            try:
                self._conn = self._listen()
            except psycopg.OperationalError as error:
                outage.unreachable(self.using, error)  # said once per outage
                failures += 1
                delay = reconnect_delay(failures, outage.down_for(self.using), random.random())
                # Cut short once another connection of this process got through.
                outage.pause(self.using, delay, self._stop, since=seen)
                continue
            self.connected.set()
            outage.reachable(self.using, began)
            failures = 0
            if not first:
                self.reconnects += 1
                self.on_reconnect()
            first = False
            try:
                self._pump(self._conn)
            except SilentConnection as error:
                logger.warning("LISTEN connection lost (%s); reconnecting", error)
            except psycopg.OperationalError as error:
                # The server went away, or closed it: the reconnect says more, once,
                # if the server is unreachable (outage.py).
                logger.debug("LISTEN connection lost (%s); reconnecting", outage.describe(error))
                outage.lost(self.using, error)  # a warning if it goes on and on
            finally:
                self.connected.clear()
                self._conn.close()

    def _pump(self, conn: psycopg.Connection) -> None:
        checked = time.monotonic()
        while not self._stop.is_set():
            # A short timeout keeps stop() responsive; notifications themselves
            # arrive as soon as the server sends them.
            for notify in conn.notifies(timeout=0.5):
                self.on_notify(notify.channel, notify.payload)
            if self.check_every and time.monotonic() - checked >= self.check_every:
                self._check(conn)
                checked = time.monotonic()

    def _check(self, conn: psycopg.Connection) -> None:
        """Raise OperationalError (which reconnects) unless ``conn`` answers in time."""
        timeout = max(2 * self.check_every, 1.0)
        if not liveness.answers(conn, timeout):
            raise SilentConnection(f"no answer to a liveness check within {timeout:.1f}s")


class SilentConnection(psycopg.OperationalError):
    """The LISTEN connection did not answer its liveness check in time."""
