"""Running one claimed job and recording its outcome."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils import timezone

from . import signals, transitions
from .connectors import runtime as connector_runtime
from .connectors.errors import ConnectorBusy
from .context import JobContext, _current
from .dependencies import results_of_dependencies
from .exceptions import DiscardJob, JobTimeout, UnknownTask
from .models import Job
from .tasks import Task, get_task

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def call_task(registered: Task[Any, Any], context: JobContext) -> Any:
    """Call the task function; async functions get an event loop of their own."""
    job = context.job
    context.thread_id = threading.get_ident()
    context.started = time.monotonic()
    token = _current.set(context)
    kwargs = job.kwargs
    if job.meta.get("pass_results"):  # a gather job of a pipeline
        kwargs = {**kwargs, "results": results_of_dependencies(job)}
    try:
        with connector_runtime.attached(context):
            kwargs = {**kwargs, **connector_runtime.injected(registered.func, context)}
            if not registered.is_async:
                return registered.func(*job.args, **kwargs)
            return _run_coroutine(registered, context, kwargs)
    finally:
        _current.reset(token)


def _run_coroutine(registered: Task[Any, Any], context: JobContext, kwargs: dict) -> Any:
    job = context.job

    async def with_timeout() -> Any:
        coroutine = registered.func(*job.args, **kwargs)
        if job.timeout is None:
            return await coroutine
        try:
            return await asyncio.wait_for(coroutine, job.timeout)
        except TimeoutError:
            raise JobTimeout(f"attempt exceeded its timeout of {job.timeout}s") from None

    loop = asyncio.new_event_loop()
    try:
        context.task = loop.create_task(with_timeout())
        context.loop = loop
        if context.cancelled:  # cancelled before the loop existed
            context.task.cancel()
        return loop.run_until_complete(context.task)
    finally:
        context.loop = None
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        logger.warning("job result %r is not JSON-serialisable; storing its repr", value)
        return {"repr": repr(value)[:10_000]}
    return value


def execute(job: Job, clock: Clock = timezone.now, context: JobContext | None = None) -> str:
    """Run ``job`` (already claimed, state executing) and write its outcome.

    Returns the state the job ended in, or "lost" if its lease was taken away
    while it ran (rescued, cancelled, timed out by the worker). Never raises
    for anything the task does.
    """
    context = context or JobContext(job)
    signals.job_started.send(sender=Job, job=job)
    try:
        try:
            registered = get_task(job.task)
        except UnknownTask as error:
            return _write(job, transitions.fail, error, clock(), discard=True)
        try:
            result = call_task(registered, context)
        except ConnectorBusy as busy:  # not started: try again soon, attempt not counted
            return _write(job, transitions.snooze, clock() + timedelta(seconds=busy.delay))
        except DiscardJob as error:
            return _write(job, transitions.fail, error, clock(), discard=True)
        except BaseException as error:  # a task's failure, even SystemExit, is data
            logger.info("job %s (%s) attempt %s failed: %r", job.pk, job.task, job.attempt, error)
            return _write(job, transitions.fail, error, clock(), backoff=registered.backoff)
        return _write(job, transitions.complete, _jsonable(result), clock())
    finally:
        drop_broken_connections()


def _write(job: Job, outcome: Callable[..., bool], *args: Any, **kwargs: Any) -> str:
    """Write an outcome, retrying through a database outage for up to a minute.

    If the database stays away the job stays executing under our lease; rescue
    returns it once this worker is gone.
    """
    delay, deadline = 0.1, time.monotonic() + 60.0
    while True:
        try:
            if not outcome(job, *args, **kwargs):
                logger.warning("job %s: outcome refused, its lease was taken away", job.pk)
                return "lost"
            return job.state
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() > deadline:
                logger.error("job %s: could not record its outcome: %s", job.pk, error)
                return "unrecorded"
            logger.warning("job %s: database unavailable (%s); retrying", job.pk, error)
            for conn in connections.all(initialized_only=True):
                conn.close()
            time.sleep(delay)  # this thread has nothing else to do meanwhile
            delay = min(delay * 2, 5.0)


def drop_broken_connections() -> None:
    """Close this thread's connections that a task left broken; keep healthy ones.

    Unlike Django's close_old_connections this ignores CONN_MAX_AGE=0, which
    would otherwise reconnect once per job.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            try:
                usable = conn.is_usable()
            except DatabaseError:
                usable = False
            if usable:
                conn.errors_occurred = False
            else:
                conn.close()
