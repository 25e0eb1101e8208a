"""Errors of connectors. Messages never contain a secret: they are stored in job errors."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from .. import limits
from ..exceptions import PgJobsError, Snooze


class ConnectorError(PgJobsError):
    """A call through a connector failed (the job's attempt fails and is retried)."""


class ConnectorRefused(ConnectorError):
    """The connector's owner did not allow this (job arguments or input for a command,
    a destination outside ``HTTP_ALLOWED_HOSTS``): no retry changes that, so the
    built-in ``call`` task discards the job."""


class ConnectorMisconfigured(ConnectorError):
    """The stored configuration is not valid for its kind.

    ``fields`` maps each bad field (``config.url``, ``secrets.token``...) to what is wrong.
    """

    def __init__(self, name: str, fields: dict[str, str]) -> None:
        self.fields = fields
        details = "; ".join(f"{field}: {problem}" for field, problem in sorted(fields.items()))
        super().__init__(f"connector {name!r} is misconfigured: {details}")


class UnknownConnectorKind(PgJobsError, LookupError):
    def __init__(self, kind: str, known: list[str]) -> None:
        self.kind = kind
        super().__init__(
            f"unknown connector kind {limits.shown(kind)}; registered kinds: {', '.join(known)}. "
            "Register your own with django_pgjobs.connectors.register_kind."
        )


class ConnectorThrottled(Snooze):
    """The service said "not now" (429 or 503 with Retry-After): this job waits until
    then, its attempt not counted, and so does every other job using the connector."""

    def __init__(self, name: str, delay: float, status: int) -> None:
        # ``connector``: the one that answered, which a task's own may not be.
        self.connector, self.delay, self.status = name, delay, status
        # Raised as the answer comes: its Retry-After counts from then, not from when
        # the task lets it go (it may hold it, or do slow work after it).
        self.answered_at = time.monotonic()
        super().__init__(delay, reason=f"connector {name!r} answered {status} with Retry-After")

    def remaining(self) -> float:
        """Seconds of the service's Retry-After still to run."""
        return max(0.0, self.delay - (time.monotonic() - self.answered_at))

    def wake_at(self, now: datetime) -> datetime:
        """When the job may run again, seen at ``now``: once the Retry-After counted
        from the answer is over."""
        return now + timedelta(seconds=self.remaining())


class ConnectorBusy(Snooze):
    """The connector can't take the job now (every concurrency slot is taken, its rate
    limit's window is full): the job waits ``delay`` seconds, its attempt not counted."""

    def __init__(self, name: str, delay: float, why: str = "is at its concurrency limit") -> None:
        self.delay = delay
        super().__init__(delay, reason=f"connector {name!r} {why}")
