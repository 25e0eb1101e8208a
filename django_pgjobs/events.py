"""Job transitions as a stream any process can subscribe to.

A trigger publishes every job insert and state change on the PostgreSQL
channel ``pgjobs_events`` (on commit, like any NOTIFY). ``listen()`` opens a
connection of its own and yields them::

    with events.listen() as stream:
        for event in stream.iter(timeout=5):
            print(event.job_id, event.previous, "->", event.state)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import psycopg
from psycopg import sql

from . import db

EVENTS_CHANNEL = "pgjobs_events"


@dataclass(frozen=True)
class Event:
    job_id: int
    task: str
    queue: str
    state: str
    previous: str | None  # None when the job was just inserted
    attempt: int

    @classmethod
    def from_payload(cls, payload: str) -> Event:
        data = json.loads(payload)
        return cls(
            job_id=data["id"],
            task=data["task"],
            queue=data["queue"],
            state=data["state"],
            previous=data.get("previous"),
            attempt=data["attempt"],
        )


class EventStream:
    """An open subscription; use as a context manager so the connection closes."""

    def __init__(self, using: str | None = None) -> None:
        self._conn = psycopg.connect(**db.connection_params(using), autocommit=True)
        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))

    def iter(
        self, timeout: float | None = None, where: Callable[[Event], bool] = lambda e: True
    ) -> Iterator[Event]:
        """Yield matching events until ``timeout`` seconds have passed (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            for notify in self._conn.notifies(timeout=remaining, stop_after=1):
                event = Event.from_payload(notify.payload)
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


def listen(using: str | None = None) -> EventStream:
    """Subscribe to job events from now on."""
    return EventStream(using)
