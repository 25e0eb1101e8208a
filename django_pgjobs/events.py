"""Job transitions as a stream any process can subscribe to.

A trigger publishes every job insert and state change on the PostgreSQL
channel ``pgjobs_events`` (on commit, like any NOTIFY), one notification for
every job of a statement that made the same transition (the payload format is
in migrations/sql/0002_database_triggers.sql); workers publish their claims and
outcomes themselves (``Publisher``), only while some session listens, as each
holding ``LISTENERS_LOCK`` says. ``listen()`` opens a connection of its own, takes
that lock, and yields them::

    with events.listen() as stream:
        for event in stream.iter(timeout=5):
            print(event.job_id, event.previous, "->", event.state)
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from django.db import DatabaseError, connections
from psycopg import sql

from . import conf, db, limits, outage
from .exceptions import InvalidOption

if TYPE_CHECKING:
    from .models import Job

EVENTS_CHANNEL = "pgjobs_events"

#: The advisory lock (two keys: 'pjob' in ASCII, 1) that every session listening on
#: ``EVENTS_CHANNEL`` holds, shared, taken before its LISTEN: workers publish their
#: claims and outcomes only while some session holds it (sql/listened.sql).
LISTENERS_LOCK = (1886023522, 1)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    job_id: int
    task: str
    queue: str
    state: str
    previous: str | None  # None when the job was just inserted
    attempt: int

    @classmethod
    def parse(cls, payload: str) -> list[Event]:
        """The events of one notification, in order (format: pgjobs_publish_events).

        None, and a warning, for a payload that is not such: anyone who may connect
        can NOTIFY this channel, and one such payload (not JSON, or JSON of other
        shapes) made every ``job.wait()`` and listener in progress fail."""
        try:
            data = json.loads(payload)
            ids = data["ids"] if "ids" in data else [data["id"]]
            events = [
                cls(
                    job_id=job_id,
                    task=data["task"],
                    queue=data["queue"],
                    state=data["state"],
                    previous=data.get("previous"),
                    attempt=data["attempt"],
                )
                for job_id in ids
            ]
        except (ValueError, TypeError, KeyError, RecursionError):
            events = None
        if events is None or not all(event.well_formed() for event in events):
            logger.warning("%s: not a job event, skipped: %s", EVENTS_CHANNEL, payload[:200])
            return []
        return events

    def well_formed(self) -> bool:
        def whole(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        texts = (self.task, self.queue, self.state)
        return (
            whole(self.job_id)
            and whole(self.attempt)
            and all(isinstance(text, str) for text in texts)
            and (self.previous is None or isinstance(self.previous, str))
        )


class EventStream:
    """An open subscription; use as a context manager so the connection closes."""

    def __init__(self, using: str | None = None) -> None:
        """``InvalidOption`` for a ``using`` that is no string: Django's connection
        handler raised "attribute name must be string" for ``listen(5)``."""
        if using is not None and not isinstance(using, str):
            raise InvalidOption(
                "using", f"must be a database alias (a str) or None, not {limits.shown(using)}"
            )
        params = db.connection_params(db.listen_alias(using))
        self._conn = psycopg.connect(**params, autocommit=True)
        hold_listeners_lock(self._conn)
        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))

    def iter(
        self, timeout: float | None = None, where: Callable[[Event], bool] = lambda e: True
    ) -> Iterator[Event]:
        """Yield matching events until ``timeout`` seconds have passed (None: forever).
        ``InvalidOption`` at once for a timeout that is no number of seconds from 0 to a
        year, as ``job.wait()``'s: a NaN never ran out, and the stream listened for ever."""
        return self._events(limits.wait_timeout(timeout), where)

    def _events(self, timeout: float | None, where: Callable[[Event], bool]) -> Iterator[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            for notify in self._conn.notifies(timeout=remaining, stop_after=1):
                for event in Event.parse(notify.payload):
                    if where(event):
                        yield event

    def first(self, where: Callable[[Event], bool], timeout: float | None = None) -> Event | None:
        """The first matching event within ``timeout`` seconds, or None."""
        return next(self.iter(timeout, where), None)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: Holds ``LISTENERS_LOCK`` shared until the session ends (or it is let go).
HOLD_LISTENERS_LOCK = "SELECT pg_advisory_lock_shared(%s, %s)"


def hold_listeners_lock(conn: psycopg.Connection[Any]) -> None:
    """Tell workers that ``conn``'s session listens for job events, before it LISTENs:
    they publish their claims and outcomes only while a session does. Held for the
    session's life; a session that LISTENs without it hears every other event (inserts,
    an operator's changes, dependency releases: the database publishes those itself)."""
    conn.execute(HOLD_LISTENERS_LOCK, LISTENERS_LOCK)


def switch_off_in_database(connection: object, **kwargs: object) -> None:
    """``connection_created`` receiver when ``PGJOBS["EVENTS"]`` is False: the event
    triggers skip sessions that say so (migrations/sql/0002_database_triggers.sql)."""
    if getattr(connection, "alias", None) == conf.get("DATABASE") and not conf.get("EVENTS"):
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute("SET pgjobs.events = 'off'")


def listen(using: str | None = None) -> EventStream:
    """Subscribe to job events from now on."""
    return EventStream(using)


Change = tuple["Job", str | None]  # a job as it is now, and the state it left

#: (task, queue, state, previous state, attempt): what jobs sharing a payload share.
RunKey = tuple[str, str, str, str | None, int]
Run = tuple[RunKey, list[int]]

#: Most job ids in one payload: 300 keeps it under PostgreSQL's 8,000 bytes.
IDS_PER_PAYLOAD = 300


def _key(change: Change) -> RunKey:
    job, previous = change
    return (job.task, job.queue, job.state, previous, job.attempt)


def runs_of(changes: Iterable[Change]) -> list[Run]:
    """Consecutive changes that made the same transition, as (key, ids): the
    events as they are now (jobs change again later), compact and in order."""
    return [(key, [job.id for job, _ in group]) for key, group in itertools.groupby(changes, _key)]


def payloads(runs: Iterable[Run]) -> list[str]:
    """Notification payloads for ``runs``, in order (the format of pgjobs_publish_events)."""
    found = []
    for (task, queue, state, previous, attempt), ids in runs:
        for start in range(0, len(ids), IDS_PER_PAYLOAD):
            found.append(
                _encode(
                    {
                        "ids": ids[start : start + IDS_PER_PAYLOAD],
                        "task": task,
                        "queue": queue,
                        "state": state,
                        "previous": previous,
                        "attempt": attempt,
                    }
                )
            )
    return found


# Raw UTF-8, not \u escapes: the 8,000-byte bound of a payload (pgjobs_publish_events)
# counts a character of a task name as four bytes at most.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def publish(changes: Iterable[Change], using: str) -> None:
    """Publish events for changes made by statements that don't publish their
    own (a worker's claims and outcomes: see pgjobs_job_transitioned).

    Inside a transaction they go out when it commits; otherwise at once, in a
    short transaction that doesn't wait for the disk, if some session listens
    (``listened``), else not at all. Nothing with ``PGJOBS["EVENTS"] = False``.
    """
    if conf.get("EVENTS"):
        _send(runs_of(changes), using)


def _send(runs: list[Run], using: str) -> None:
    if not runs:
        return
    connection = connections[using]
    if connection.in_atomic_block or not connection.get_autocommit():
        # Sent when the change commits, to whoever listens then: a session may start
        # listening after a look for one here, and before that commit.
        statement = "publish"
    elif listened(using):
        statement = "publish_now"
    else:
        # Nobody to tell. The change committed before this look, so a session that
        # LISTENs from now on hears only later changes, which are looked at anew.
        return
    db.fetch_dicts(statement, {"payloads": payloads(runs)}, using)


def listened(using: str) -> bool:
    """Whether some session listens for job events now (holds ``LISTENERS_LOCK``)."""
    lock, key = LISTENERS_LOCK
    return db.fetch_dicts("listened", {"lock": lock, "key": key}, using)[0]["listened"]


#: How long a worker's publisher retries a batch of events through an outage, from
#: its first failure, before it drops them (logged), and the waits it draws its
#: retries' pauses from (the last one repeated).
PUBLISH_RETRY_FOR = 2.6
PUBLISH_RETRY_WAITS = (0.1, 0.5, 2.0)


class Publisher:
    """``publish`` from a thread of its own, for a worker.

    Publishing waits for PostgreSQL's cluster-wide NOTIFY lock, which every
    notifying commit on the server holds through its fsync; a worker's claims
    and outcome writes must not wait for it. Events queue up here (in order)
    while the thread waits, and go out many per statement.
    """

    MAX_RUNS = 500

    def __init__(self, using: str) -> None:
        self.using = using
        self._queue: SimpleQueue[list[Run] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pgjobs-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, changes: Iterable[Change]) -> None:
        runs = runs_of(changes)
        if runs:
            self._queue.put(runs)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        db.prepare_on_this_thread()
        try:
            while (first := self._queue.get()) is not None:
                batch, last = list(first), False
                while len(batch) < self.MAX_RUNS:
                    try:
                        more = self._queue.get_nowait()
                    except Empty:
                        break
                    if more is None:
                        last = True
                        break
                    batch += more
                self._send(batch)
                if last:
                    break
        finally:
            connections.close_all()

    def _send(self, batch: list[Run]) -> None:
        """Send ``batch``, retrying for ``PUBLISH_RETRY_FOR`` seconds from its first
        failure; then drop it (logged): the worker's claims and outcomes go on."""
        waits = iter(PUBLISH_RETRY_WAITS)
        give_up_at: float | None = None
        while True:
            began, seen = time.monotonic(), outage.generation(self.using)
            try:
                _send(batch, self.using)
                if give_up_at is not None:  # back after a failure, on a new connection
                    outage.reachable(self.using, began)
                return
            except DatabaseError as error:
                now = time.monotonic()
                if give_up_at is not None and now >= give_up_at:
                    logger.error("dropped %d job event(s): %s", len(batch), outage.describe(error))
                    return
                give_up_at = give_up_at or now + PUBLISH_RETRY_FOR
                if isinstance(error, db.CONNECTION_TROUBLE):
                    outage.unreachable(self.using, error)  # said once per outage
                else:
                    logger.warning("could not publish job events (%s); retrying", error)
                connections[self.using].close()
                # Drawn, so a fleet's publishers don't retry in step; the budget is
                # counted in time, so drawing shorter waits doesn't shorten it.
                wait = outage.spread(next(waits, PUBLISH_RETRY_WAITS[-1]))
                outage.pause(self.using, min(wait, give_up_at - now), since=seen)
