"""Rate limits: at most N starts in any window of a period, by the database's clock.

A limit keeps its recent starts in a ``RateWindow`` row (scope ``queue:<name>``,
``connector:<name>``, or ``key:<queue>/<key>`` for each key of a queue's
``key_rate_limit``, recorded by ``claim_keyed.sql``, ``key:<queue>/md5:<hex>`` for a
key longer than enqueue writes): the time of each start within
the last period. Its users take turns on a row lock (a queue's claims on the queue
row, ``lock_queue.sql``; a connector's jobs on the window row,
``lock_rate_window.sql``), then read the window
in a statement of their own, so that the database's clock reads later than every
start recorded before. A start at ``t`` is allowed while fewer than N recorded
starts are later than ``t - period``: then no window ``(a, a + period]`` ever holds
more than N starts (docs/flow-control.md#rate-limits says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import DataError, transaction

from . import db


@dataclass(frozen=True)
class Window:
    """A rate limit's window as read now (``now`` by the database's clock)."""

    limit: int
    period: float
    now: datetime
    used: int
    #: The start that must leave the window before it has room again once full.
    leaves_first: datetime | None

    @property
    def left(self) -> int:
        """Starts allowed now."""
        return max(0, self.limit - self.used)

    def room_again_in(self) -> float:
        """Seconds until a start is allowed again, once the window is full: when the
        start that leaves first (or, if there was none, those taken now) leaves it."""
        # (None also if it was written around us and can't be loaded: wait a period.)
        first = self.leaves_first if self.used and self.leaves_first else self.now
        return max(0.0, (first - self.now).total_seconds() + self.period)


def read(scope: str, limit: int, period: float, using: str) -> Window:
    """The window of ``scope``: only correct in the transaction that holds its turn."""
    row = db.fetch_dicts("rate_window", {"scope": scope, "limit": limit, "period": period}, using)[
        0
    ]
    return Window(limit, period, row["now"], row["used"], row["leaves_first"])


def record(window: Window, count: int, scope: str, using: str) -> None:
    """Record ``count`` starts at ``window.now`` (in the transaction that read it)."""
    if count:
        params = {"scope": scope, "count": count, "at": window.now, "period": window.period}
        db.execute("record_starts", params, using)


class Taken(NamedTuple):
    """What ``take`` got: the start's time, or the seconds until there is room."""

    at: datetime | None
    wait: float = 0.0


def take(scope: str, limit: int, period: float, using: str) -> Taken:
    """Take one start under the limit now, in a short transaction of its own."""
    with transaction.atomic(using=using):
        if not db.fetch_dicts("lock_rate_window", {"scope": scope}, using):
            db.execute("make_rate_window", {"scope": scope}, using)
            db.fetch_dicts("lock_rate_window", {"scope": scope}, using)
        window = read(scope, limit, period, using)
        if not window.left:
            return Taken(None, window.room_again_in())
        record(window, 1, scope, using)
    return Taken(window.now)


def queue_scope(name: str) -> str:
    return f"queue:{name}"


def connector_scope(name: str) -> str:
    return f"connector:{name}"


def key_scope(queue: str) -> str:
    """The prefix of the windows of a queue's concurrency keys (``key:<queue>/<key>``):
    a queue name has no "/", so no two queue and key pairs share a window."""
    return f"key:{queue}/"


def prune(now: datetime, using: str) -> int:
    """Delete windows whose every start has left them (a limit that was removed, a
    connector no job used lately): the next start makes them again."""
    from .models import RateWindow

    return RateWindow.objects.using(using).filter(expires_at__lt=now).delete()[0]


def describe(limit: int | None, period: float) -> str:
    """``50 per 1 s``, ``1,000 per 1 h``: a limit as the admin shows it."""
    if limit is None:
        return ""
    return f"{limit:,} per {period_text(period)}"


def period_text(period: float) -> str:
    """``1 s``, ``30 min``, ``1 h``: a period as the admin shows it."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if period >= size and period % size == 0:
            return f"{period / size:g} {unit}"
    return f"{period:g} s"


def in_use(periods: dict[str, float], now: datetime, using: str) -> dict[str, int]:
    """Starts within the last period of each window of ``periods`` ({scope: period}),
    for the admin."""
    from .models import RateWindow

    try:
        rows = list(RateWindow.objects.using(using).filter(scope__in=list(periods)))
    except DataError:  # a time Python can't load, written around us: show none
        return {}
    return {
        row.scope: sum(
            1
            for at in (row.starts if isinstance(row.starts, list) else ())
            if isinstance(at, datetime) and at > now - timedelta(seconds=periods[row.scope])
        )
        for row in rows
    }
