"""What of a worker keeps failing, as its row says it (``WorkerProcess.failing``).

The worker's heartbeat writes it from ``Worker.failing``: a list of ``{"queue": name
(None for the loop's passes), "since": "2026-12-07T14:02:17Z" (UTC, by the database's
clock), "failures": 24, "error": "DataError"}``, oldest first, at most ``MOST_WRITTEN``;
NULL when nothing fails. The error's class only, never its text: a refused row's values
are in it (the worker's log has it in full).

``read`` takes whatever a row holds there (written by SQL, by another version: any
JSON, of any size, read within ``shown`` limits by the callers) and keeps what it can
of each entry; ``said`` says one for health, the admin and the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import logs

if TYPE_CHECKING:
    from .worker import Worker

#: Most entries a heartbeat writes (the oldest): a worker of many queues all failing
#: at once meets a database-wide problem, and each heartbeat writes the list again.
MOST_WRITTEN = 20

#: Most entries ``read`` keeps of a row's list (the others are counted).
MOST_READ = 1000

#: Most characters of a queue's name or an error's class said.
NAME_CHARS = 100

_SINCE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def written(worker: Worker) -> list[dict[str, Any]] | None:
    """What ``worker``'s heartbeat writes in its row's ``failing``: its loop's passes
    and the claims of its queues that are failing now, oldest first; None if none is."""
    now, database_now = time.monotonic(), worker.database_clock()
    found = sorted(worker.failing(0.0), key=lambda entry: entry[1])[:MOST_WRITTEN]
    return [
        {
            "queue": name,
            "since": (database_now - timedelta(seconds=now - since)).strftime(_SINCE_FORMAT),
            "failures": failures,
            "error": kind,
        }
        for name, since, failures, kind in found
    ] or None


@dataclass(frozen=True)
class Failing:
    """One entry as read: each part None where the row held nothing readable.
    ``loop``: the loop's passes (the entry's queue was null); else ``queue`` is its
    name, printable and cut ("?" for a name that is not text)."""

    loop: bool
    queue: str | None
    since: datetime | None
    failures: int | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "since": self.since,
            "failures": self.failures,
            "error": self.error,
        }


@dataclass(frozen=True)
class Read:
    """A row's entries as ``read`` could take them, and how many more it left out."""

    entries: list[Failing]
    more: int = 0

    def __bool__(self) -> bool:
        return bool(self.entries)


def read(value: Any) -> Read:
    """The entries of a row's ``failing``, whatever it holds: a value that is no list
    has none, an entry that is no object is left out, an odd part of one is None."""
    if not isinstance(value, list):
        return Read([])
    entries = []
    skipped = 0
    for entry in value:
        if not isinstance(entry, dict):
            continue
        if len(entries) >= MOST_READ:
            skipped += 1
            continue
        entries.append(_entry(entry))
    return Read(entries, skipped)


def _entry(entry: dict[str, Any]) -> Failing:
    queue = entry.get("queue")
    failures = entry.get("failures")
    error = entry.get("error")
    return Failing(
        loop=queue is None,
        queue=None if queue is None else _name(queue) if isinstance(queue, str) else "?",
        since=_since(entry.get("since")),
        failures=failures if type(failures) is int and 0 <= failures < 10**18 else None,
        error=_name(error) if isinstance(error, str) and error else None,
    )


def _name(text: str) -> str:
    cut = text[:NAME_CHARS] + ("..." if len(text) > NAME_CHARS else "")
    return logs.printable(cut)


def _since(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        since = datetime.fromisoformat(value)
        if since.tzinfo is None:
            return None
        return since.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def longer_than(entries: Read, seconds: float, now: datetime) -> list[Failing]:
    """The entries failing since more than ``seconds`` before ``now``, oldest first."""
    found = []
    for entry in entries.entries:
        if entry.since is None:
            continue
        try:
            failing_for = (now - entry.since).total_seconds()
        except OverflowError:  # pragma: no cover - both are datetimes of years 1 to 9999
            continue
        if failing_for > seconds:
            found.append(entry)
    return sorted(found, key=lambda entry: entry.since or now)


def said(entry: Failing, now: datetime | None = None) -> str:
    """ "queue 'mail' claims failing since 14:02:17 UTC (24 failures, DataError)"; the
    date too when it is not ``now``'s (UTC)."""
    what = "its loop's passes" if entry.loop else f"queue {entry.queue!r} claims"
    if entry.since is None:
        since = " since an unreadable time"
    elif now is not None and entry.since.date() == now.astimezone(UTC).date():
        since = f" since {entry.since.strftime('%H:%M:%S UTC')}"
    else:
        since = f" since {entry.since.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    parts = []
    if entry.failures is not None:
        parts.append(f"{entry.failures} failure{'' if entry.failures == 1 else 's'}")
    if entry.error is not None:
        parts.append(entry.error)
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{what} failing{since}{detail}"


def said_all(entries: list[Failing], most: int, more: int = 0, now: datetime | None = None) -> str:
    """The first ``most`` of ``entries`` said, joined, and how many more there are."""
    left = len(entries) - most + more
    text = ", ".join(said(entry, now) for entry in entries[:most])
    return text + (f", and {left} more" if left > 0 else "")
