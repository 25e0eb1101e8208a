"""Waiting for a job to finish, woken by its event rather than by polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from django.core.exceptions import ObjectDoesNotExist
from django.db import connections
from psycopg import sql

from . import conf, db, limits
from .events import EVENTS_CHANNEL, HOLD_LISTENERS_LOCK, LISTENERS_LOCK, Event, listen
from .exceptions import JobGone
from .states import FINISHED

if TYPE_CHECKING:
    from .models import Job


def _finished_event(job_id: int) -> Callable[[Event], bool]:
    return lambda event: event.job_id == job_id and event.state in FINISHED


#: Seconds between reads of a waited-for job when events are off.
POLL_EVERY = 0.05

#: Seconds between looks at a waited-for job's row while no event comes: no event says
#: that a job was deleted, and a wait without a timeout waited for it forever.
WAIT_CHECK_EVERY = 1.0


def _refreshed(job: Job) -> Job:
    """``job`` read again; JobGone if its row was deleted or pruned."""
    try:
        job.refresh_from_db()
    except ObjectDoesNotExist:
        raise JobGone(job.pk) from None
    return job


async def _arefreshed(job: Job) -> Job:
    try:
        await job.arefresh_from_db()
    except ObjectDoesNotExist:
        raise JobGone(job.pk) from None
    return job


def _timed_out(job: Job, timeout: float | None) -> TimeoutError:
    """Says where the job (just read again) stands: a job no worker took reads as one
    the worker is slow with, where the cause is that no worker serves its queue."""
    where = f"it is {job.state}, on queue {job.queue!r}"
    if connections[job._state.db or conf.get("DATABASE")].in_atomic_block:
        # The likeliest cause: enqueued in this very transaction (a view under
        # ATOMIC_REQUESTS), which no worker can see, so the wait could never end.
        where += (
            ", and this wait runs inside a transaction (transaction.atomic() or "
            "ATOMIC_REQUESTS): workers see a job enqueued or retried in it only once it "
            "commits, so wait after the commit"
        )
    elif job.state == "available":
        where += " (no worker has taken it: is `manage.py runworker` running for that queue?)"
    return TimeoutError(f"job {job.pk} did not finish within {timeout:g}s: {where}")


def wait_for(job: Job, timeout: float | None) -> Job:
    limits.saved(job, "wait")
    timeout = limits.wait_timeout(timeout)
    if not conf.get("EVENTS"):
        return _poll(job, timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    matches = _finished_event(job.pk)
    with listen(job._state.db) as stream:
        # Listening first, then reading, leaves no gap for the event to slip through.
        if _refreshed(job).is_finished:
            return job
        while stream.first(matches, _step(deadline)) is None:
            # No event for a while: the row may be gone, which no event says.
            if _refreshed(job).is_finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise _timed_out(job, timeout)
    return _refreshed(job)


def _step(deadline: float | None, since: float | None = None) -> float:
    """Seconds to listen before the next look at the row (WAIT_CHECK_EVERY after
    ``since``, default now), or until the deadline if that comes first."""
    now = time.monotonic()
    step = WAIT_CHECK_EVERY - (0.0 if since is None else now - since)
    return max(0.0, step if deadline is None else min(deadline - now, step))


def _poll(job: Job, timeout: float | None) -> Job:
    """wait() without events (``PGJOBS["EVENTS"] = False``): read until finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if _refreshed(job).is_finished:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise _timed_out(job, timeout)
        time.sleep(POLL_EVERY)  # nothing to wake us: events are off


async def _async_poll(job: Job, timeout: float | None) -> Job:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if (await _arefreshed(job)).is_finished:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise _timed_out(job, timeout)
        await asyncio.sleep(POLL_EVERY)


async def async_wait_for(job: Job, timeout: float | None) -> Job:
    limits.saved(job, "async_wait")
    timeout = limits.wait_timeout(timeout)
    if not conf.get("EVENTS"):
        return await _async_poll(job, timeout)
    params = db.connection_params(db.listen_alias(job._state.db))
    conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    try:
        await conn.execute(HOLD_LISTENERS_LOCK, LISTENERS_LOCK)  # see events.hold_listeners_lock
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))
        if (await _arefreshed(job)).is_finished:
            return job
        deadline = None if timeout is None else time.monotonic() + timeout
        matches = _finished_event(job.pk)
        looked = time.monotonic()
        while True:
            async for notify in conn.notifies(timeout=_step(deadline, looked), stop_after=1):
                if any(matches(event) for event in Event.parse(notify.payload)):
                    return await _arefreshed(job)
            now = time.monotonic()
            if now - looked >= WAIT_CHECK_EVERY or (deadline is not None and now >= deadline):
                # The row may be gone, which no event says.
                if (await _arefreshed(job)).is_finished:
                    return job
                if deadline is not None and now >= deadline:
                    raise _timed_out(job, timeout)
                looked = now
            await asyncio.sleep(0)
    finally:
        await conn.close()
