"""Waiting for a job to finish, woken by its event rather than by polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from . import conf, db, limits
from .events import EVENTS_CHANNEL, Event, listen
from .states import FINISHED

if TYPE_CHECKING:
    from .models import Job


def _finished_event(job_id: int) -> Callable[[Event], bool]:
    return lambda event: event.job_id == job_id and event.state in FINISHED


#: Seconds between reads of a waited-for job when events are off.
POLL_EVERY = 0.05


def checked_timeout(timeout: object) -> float | None:
    """None (no limit) or a number of seconds from 0 to a year, else InvalidOption: a
    NaN never ran out (the wait never ended), a string failed in the arithmetic."""
    return None if timeout is None else limits.seconds(timeout, "timeout", zero=True)


def wait_for(job: Job, timeout: float | None) -> Job:
    limits.saved(job, "wait")
    timeout = checked_timeout(timeout)
    if not conf.get("EVENTS"):
        return _poll(job, timeout)
    with listen(job._state.db) as stream:
        # Listening first, then reading, leaves no gap for the event to slip through.
        job.refresh_from_db()
        if job.is_finished:
            return job
        if stream.first(_finished_event(job.pk), timeout) is None:
            raise TimeoutError(f"job {job.pk} did not finish within {timeout:g}s")
    job.refresh_from_db()
    return job


def _poll(job: Job, timeout: float | None) -> Job:
    """wait() without events (``PGJOBS["EVENTS"] = False``): read until finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if job.is_finished:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job.pk} did not finish within {timeout:g}s")
        time.sleep(POLL_EVERY)  # nothing to wake us: events are off


async def _async_poll(job: Job, timeout: float | None) -> Job:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        await job.arefresh_from_db()
        if job.is_finished:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job.pk} did not finish within {timeout:g}s")
        await asyncio.sleep(POLL_EVERY)


async def async_wait_for(job: Job, timeout: float | None) -> Job:
    limits.saved(job, "async_wait")
    timeout = checked_timeout(timeout)
    if not conf.get("EVENTS"):
        return await _async_poll(job, timeout)
    params = db.connection_params(db.listen_alias(job._state.db))
    conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))
        await job.arefresh_from_db()
        if job.is_finished:
            return job
        deadline = None if timeout is None else time.monotonic() + timeout
        matches = _finished_event(job.pk)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {job.pk} did not finish within {timeout:g}s")
            async for notify in conn.notifies(timeout=remaining, stop_after=1):
                if any(matches(event) for event in Event.parse(notify.payload)):
                    await job.arefresh_from_db()
                    return job
            await asyncio.sleep(0)
    finally:
        await conn.close()
