"""Tasks the flow-control tests use (snooze, retry policies, limits, debounce)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

from django_pgjobs import RetryAfter, Snooze, task
from django_pgjobs.context import current_job
from testproject.demo.models import Run


def _snoozes() -> int:
    context = current_job()
    snoozed = context.job.meta.get("snoozed") if context else None
    return snoozed["count"] if snoozed else 0


@task
def snooze_times(times: int, seconds: float = 0.2, returned: bool = False) -> int:
    """Snooze ``times`` times (raised, or returned), then complete with the count."""
    done = _snoozes()
    if done < times:
        snooze = Snooze(seconds, reason=f"waiting, {done + 1} of {times}")
        if returned:
            return snooze  # type: ignore[return-value]
        raise snooze
    return done


#: Times no snooze can have, by name (JSON arguments can't carry most of them).
ODD_SECONDS = {
    "negative": -1,
    "nan": float("nan"),
    "inf": float("inf"),
    "huge": 1e300,
    "huge-int": 10**400,
    "text": "10",
    "none": None,
    "bool": True,
}


@task
def snooze_with(kind: str) -> None:
    raise Snooze(ODD_SECONDS[kind])  # type: ignore[arg-type]


@task
def snooze_until(when: str) -> None:
    """Snooze until ``when``, an ISO time, naive or not."""
    raise Snooze(until=datetime.fromisoformat(when))


@task(max_attempts=2)
def retry_after(seconds: float) -> None:
    raise RetryAfter(seconds, message="the service asked us to wait")


@task(discard_on=(ValueError,))
def discards_on_value_error(kind: str) -> None:
    raise ValueError(kind) if kind == "value" else KeyError(kind)


@task(retry_on=(TimeoutError,))
def retries_on_timeout(kind: str) -> None:
    raise TimeoutError(kind) if kind == "timeout" else KeyError(kind)


def _backoff(attempt: int, error: BaseException) -> object:
    how = str(error.args[0]) if error.args else ""
    if how == "raise":
        raise RuntimeError("the backoff function broke")
    if how == "delta":
        return timedelta(minutes=attempt)
    if how == "nan":
        return float("nan")
    return 7.0 * attempt


@task(backoff=_backoff)
def backs_off(how: str) -> None:
    raise RuntimeError(how)


@task
def started(tag: str, seconds: float = 0.0) -> str:
    """Record a start (database time, by the database), hold ``seconds``, return the pid."""
    Run.objects.create(tag=tag, pid=os.getpid())
    if seconds:
        time.sleep(seconds)
    return tag


@task(concurrency_key=lambda account_id, n=0: f"account-{account_id}")
def per_account(account_id: int, n: int = 0) -> int:
    """A job of one account: its key derived from its arguments at enqueue."""
    return n


@task(concurrency_key="reports")
def one_key_for_all() -> None:
    """Every job of this task has the same key."""


def _odd_key(kind: str) -> object:
    if kind == "raises":
        raise LookupError("no such account")
    return {"int": 7, "empty": "", "long": "k" * 256, "nul": "a\x00", "list": ["a"]}[kind]


@task(concurrency_key=lambda kind: _odd_key(kind))
def odd_key(kind: str) -> None:
    """Its key function raises, or returns what no key can be."""
