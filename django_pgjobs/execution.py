"""Running one claimed job and recording its outcome."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connections
from django.utils import timezone

from . import signals, transitions
from .exceptions import DiscardJob, UnknownTask
from .models import Job
from .tasks import Task, get_task

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class JobTimeout(Exception):
    """The attempt ran longer than the job's timeout."""


def call_task(registered: Task[Any, Any], job: Job) -> Any:
    """Call the task function; async functions get an event loop of their own."""
    if not registered.is_async:
        return registered.func(*job.args, **job.kwargs)

    async def with_timeout() -> Any:
        coroutine = registered.func(*job.args, **job.kwargs)
        if job.timeout is None:
            return await coroutine
        try:
            return await asyncio.wait_for(coroutine, job.timeout)
        except TimeoutError:
            raise JobTimeout(f"attempt exceeded its timeout of {job.timeout}s") from None

    return asyncio.run(with_timeout())


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        logger.warning("job result %r is not JSON-serialisable; storing its repr", value)
        return {"repr": repr(value)[:10_000]}
    return value


def execute(job: Job, clock: Clock = timezone.now) -> str:
    """Run ``job`` (already claimed, state executing) and write its outcome.

    Returns the state the job ended in, or "lost" if its lease was taken away
    while it ran. Never raises for anything the task does.
    """
    signals.job_started.send(sender=Job, job=job)
    try:
        try:
            registered = get_task(job.task)
        except UnknownTask as error:
            transitions.fail(job, error, clock(), discard=True)
            return job.state
        try:
            result = call_task(registered, job)
        except DiscardJob as error:
            transitions.fail(job, error, clock(), discard=True)
        except BaseException as error:
            logger.info("job %s (%s) attempt %s failed: %r", job.pk, job.task, job.attempt, error)
            transitions.fail(job, error, clock(), backoff=registered.backoff)
        else:
            if not transitions.complete(job, _jsonable(result), clock()):
                logger.warning("job %s finished after its lease was lost; result dropped", job.pk)
                return "lost"
        return job.state
    finally:
        drop_broken_connections()


def drop_broken_connections() -> None:
    """Close this thread's connections that a task left broken; keep healthy ones.

    Unlike Django's close_old_connections this ignores CONN_MAX_AGE=0, which
    would otherwise reconnect once per job.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()
