"""The database server's clock as seen from this host: what cron ticks and heartbeats go by."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from django.utils import timezone

from . import db

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: A measured skew larger than this (seconds) is logged as a warning, once per
#: change of more than this: hosts should keep their clocks in sync (NTP).
WARN_ABOVE = 1.0


class DatabaseClock:
    """A clock that tells the database server's time: this host's clock, less its
    ``skew`` (seconds it is ahead of the database's; negative: behind) as measured
    by ``measure()``.

    ``measure`` reads ``clock_timestamp()`` in one round trip and takes the
    host's clock just before and just after; the server's reading belongs to the
    middle of the two, give or take half the round trip (``uncertainty``).
    Between measurements the host's clock carries the time on: skew drifts by
    milliseconds an hour, a stepped host clock is caught at the next measurement.
    Callable like ``timezone.now``; ``skew`` is 0.0 until the first measurement.
    """

    def __init__(self, using: str | None = None, host_clock: Clock | None = None) -> None:
        self.using = using
        # Read here, not as a default argument: tests may have replaced timezone.now.
        self.host_clock = host_clock or timezone.now
        self.skew = 0.0
        self.uncertainty: float | None = None
        self._warned_at: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return self.host_clock() - timedelta(seconds=self.skew)

    def measure(self) -> float:
        """Measure how far this host's clock is ahead of the database's, and use it."""
        before = self.host_clock()
        server = database_now(self.using)
        after = self.host_clock()
        half = (after - before) / 2
        skew = (before + half - server).total_seconds()
        with self._lock:
            self.skew, self.uncertainty = skew, half.total_seconds()
            self._warn(skew)
        return skew

    def _warn(self, skew: float) -> None:
        if abs(skew) < WARN_ABOVE:
            self._warned_at = None
            return
        if self._warned_at is not None and abs(skew - self._warned_at) < WARN_ABOVE:
            return
        self._warned_at = skew
        logger.warning(
            "this host's clock is %.1f s %s the database's; going by the database's "
            "(keep the clocks in sync with NTP)",
            abs(skew),
            "ahead of" if skew > 0 else "behind",
        )


def database_now(using: str | None = None) -> datetime:
    """The database server's time now (one round trip): what to judge heartbeats by."""
    return db.fetch_dicts("clock", {}, using)[0]["now"]


def measure(clock: Clock) -> float | None:
    """Measure ``clock``'s skew if it is a ``DatabaseClock``; None for other clocks
    (a test's simulated time is what it says)."""
    measuring = getattr(clock, "measure", None)
    return measuring() if callable(measuring) else None
