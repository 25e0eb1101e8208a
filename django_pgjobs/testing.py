"""Helpers for testing code that enqueues jobs: run them in-process, assert on them, move time.

    from django_pgjobs import testing

    def test_signup_sends_a_welcome_mail(client):
        client.post("/signup/", {...})
        testing.assert_enqueued(send_welcome, args=[42], queue="mail")
        testing.drain()                    # run what is due, here and now

Jobs run in the test's own thread and database connection, so they see the
test's transaction and their writes are rolled back with it. Everything works
for pgjobs ``@task`` functions and for Django ``@task`` functions enqueued
through ``PgJobsBackend`` alike.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from django.utils import timezone

from . import conf, enqueue, limits, payload, signals
from .exceptions import InvalidOption
from .queues import validate_name
from .states import JobState

__all__ = [
    "FrozenClock",
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "enqueued_jobs",
    "freeze_time",
    "run_inline",
]

#: The states of a job that is enqueued and has not started yet.
PENDING = (JobState.WAITING, JobState.SCHEDULED, JobState.AVAILABLE)


def task_name(task: Any) -> str:
    """The dotted path a job stores for ``task``: a pgjobs Task, a Django Task or a string."""
    if isinstance(task, str):
        # No job's task holds these: the lookup was a DataError or UnicodeEncodeError.
        if problem := limits.text_problem(task):
            raise InvalidOption("task", problem)
        return task
    if hasattr(task, "module_path"):  # Django's Task
        return task.module_path
    if hasattr(task, "name") and hasattr(task, "func"):  # pgjobs' Task
        return task.name
    raise TypeError(f"expected a task or its dotted path, not {limits.shown(task)}")


# -- running jobs -------------------------------------------------------------------------


def drain(
    queues: str | Iterable[str] | None = None,
    *,
    now: datetime | None = None,
    max_jobs: int | None = None,
    raise_errors: bool = False,
) -> Counter[str]:
    """Run every job that is due, in this thread, until none is left; count the outcomes.

    Jobs enqueued by the jobs that run are run too, if they are due. Failed
    attempts are recorded as a worker would (retryable, then discarded); with
    ``raise_errors`` the first exception a job raised is raised again once all
    due jobs have run. ``now`` defaults to the current (or frozen) time.
    """
    from .worker import Worker

    limits.boolean(raise_errors, "raise_errors")  # "no" raised, as any true value did
    names = _queue_names(queues)
    # The clock is looked up on each call, so freeze_time() applies to it.
    worker = Worker(names, clock=lambda: timezone.now())
    if not raise_errors:
        return worker.drain(now=now, max_jobs=max_jobs)
    with _errors_raised_here() as errors:
        outcome = worker.drain(now=now, max_jobs=max_jobs)
    if errors:
        raise errors[0]
    return outcome


def _queue_names(queues: Any) -> list[str] | None:
    """``drain``'s queues as a list (each name is checked by the worker): ``drain(5)``
    was "TypeError: 'int' object is not iterable", from inside the worker."""
    if queues is None or isinstance(queues, str):
        return None if queues is None else [queues]
    if not isinstance(queues, Iterable):
        raise InvalidOption(
            "queues", f"must be a queue name or a list of them, not {limits.shown(queues)}"
        )
    return list(queues)


@contextmanager
def _errors_raised_here() -> Iterator[list[BaseException]]:
    """Collect the exceptions of jobs that fail in this thread while the block runs."""
    errors: list[BaseException] = []
    thread = threading.get_ident()

    def collect(sender: Any, job: Any, error: BaseException | None, **kwargs: Any) -> None:
        # Rescue of a dead worker's job sends error=None: nothing was raised here.
        if error is not None and threading.get_ident() == thread:
            errors.append(error)

    signals.job_retrying.connect(collect, weak=False)
    signals.job_discarded.connect(collect, weak=False)
    try:
        yield errors
    finally:
        signals.job_retrying.disconnect(collect)
        signals.job_discarded.disconnect(collect)


@contextmanager
def run_inline(*, raise_errors: bool = False) -> Iterator[None]:
    """Run each job as soon as it is enqueued in this thread, before enqueue returns.

    The enqueued job, and any other due job of its queue, runs through
    ``drain``: the returned Job (or Django TaskResult) already shows the
    outcome. Jobs scheduled for later stay scheduled: advance time with
    ``freeze_time`` and call ``drain()``. A failure is recorded on the job, or
    raised from the enqueue call with ``raise_errors``.
    """
    limits.boolean(raise_errors, "raise_errors")
    thread = threading.get_ident()
    busy = threading.local()

    def run_now(job: Any) -> None:
        if threading.get_ident() != thread or getattr(busy, "draining", False):
            return  # a job enqueued by a running job: the drain in progress picks it up
        busy.draining = True
        try:
            drain(job.queue, raise_errors=raise_errors)
        finally:
            busy.draining = False
            job.refresh_from_db()

    # Not a job_enqueued receiver: a receiver's error is logged, and this one's is
    # the enqueue call's to raise.
    enqueue.inline_runners.append(run_now)
    try:
        yield
    finally:
        enqueue.inline_runners.remove(run_now)


# -- asserting on what was enqueued ---------------------------------------------------------


def enqueued_jobs(
    task: Any = None,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    states: Iterable[str] = PENDING,
) -> list[Any]:
    """Jobs that are enqueued and have not started, matching every criterion given.

    ``args`` and ``kwargs`` must equal the job's exactly (as JSON). A criterion no job
    could hold is refused as ``Job.enqueue`` refuses it (PayloadError, InvalidQueueName,
    InvalidOption), rather than matching nothing.
    """
    from .models import Job

    _check_criteria(args, kwargs, queue, priority)
    jobs = Job.objects.using(conf.get("DATABASE")).filter(state__in=_states(states))
    if task is not None:
        jobs = jobs.filter(task=task_name(task))
    if args is not None:
        jobs = jobs.filter(args=list(args))
    if kwargs is not None:
        jobs = jobs.filter(kwargs=dict(kwargs))
    if queue is not None:
        jobs = jobs.filter(queue=queue)
    if priority is not None:
        jobs = jobs.filter(priority=priority)
    return list(jobs.order_by("id"))


def _check_criteria(args: Any, kwargs: Any, queue: Any, priority: Any) -> None:
    """Refuse criteria no job can hold: a NUL or NaN reached PostgreSQL as a DataError
    (aborting the test's transaction), and ``args="ab"`` was read as ``["a", "b"]``."""
    if args is not None or kwargs is not None:
        payload.check([] if args is None else args, {} if kwargs is None else kwargs, 2**62)
    if queue is not None:
        validate_name(queue)
    if priority is not None:
        limits.priority(priority)


def _states(states: Any) -> list[str]:
    """The job states named by ``states``: a string was read as its letters, and a name
    that is no state matched nothing, so either made any assertion of absence pass."""
    if isinstance(states, str) or not isinstance(states, Iterable):
        raise InvalidOption("states", f"must be a list of job states, not {limits.shown(states)}")
    names = [str(state) if isinstance(state, JobState) else state for state in states]
    for name in names:
        if name not in JobState.values:
            known = ", ".join(JobState.values)
            raise InvalidOption("states", f"{limits.shown(name)} is not a job state: use {known}")
    return names


def assert_enqueued(
    task: Any,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    count: int | None = None,
) -> list[Any]:
    """Fail unless a job of ``task`` matching the criteria waits to run; return the matches.

    With ``count``, exactly that many must match. Criteria left out match anything.
    """
    if count is not None:  # "1" never equalled a count: "expected 1 job(s) ... found 1"
        limits.whole_number(count, "count", 0, limits.MAX_ID)
    criteria = {"args": args, "kwargs": kwargs, "queue": queue, "priority": priority}
    found = enqueued_jobs(task, **criteria)
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    wanted = f"{count} job(s)" if count is not None else "a job"
    raise AssertionError(
        f"expected {wanted} of {task_name(task)} with {_describe(criteria)}; "
        f"found {len(found)}.\n{_pending_of(task)}"
    )


def assert_not_enqueued(
    task: Any,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> None:
    """Fail if a job of ``task`` matching the criteria waits to run."""
    criteria = {"args": args, "kwargs": kwargs, "queue": queue, "priority": priority}
    found = enqueued_jobs(task, **criteria)
    if found:
        raise AssertionError(
            f"expected no job of {task_name(task)} with {_describe(criteria)}; "
            f"found {len(found)}.\n{_pending_of(task)}"
        )


def _describe(criteria: dict[str, Any]) -> str:
    given = {name: value for name, value in criteria.items() if value is not None}
    return ", ".join(f"{name}={value!r}" for name, value in given.items()) or "any arguments"


def _pending_of(task: Any) -> str:
    jobs = enqueued_jobs(task)
    if not jobs:
        return "No job of that task is enqueued."
    lines = [
        f"  #{job.pk} [{job.state}] queue={job.queue!r} priority={job.priority} "
        f"args={job.args!r} kwargs={job.kwargs!r}"
        for job in jobs[:20]
    ]
    more = f"\n  ... and {len(jobs) - 20} more" if len(jobs) > 20 else ""
    return "Enqueued jobs of that task:\n" + "\n".join(lines) + more


# -- time -------------------------------------------------------------------------------------


class FrozenClock:
    """A clock that stands still until told to move. Call it for the current time."""

    def __init__(self, at: datetime) -> None:
        self.set(at)

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime) -> datetime:
        """Stand at ``at``: in UTC, as the real clock gives the time, and a time a row
        holds. As given, an offset PostgreSQL doesn't take (+20:00) failed every
        enqueue under the clock (its created_at), and year 1 or 9999-12-31 failed it
        too: database errors that aborted the test's transaction."""
        if not isinstance(at, datetime) or limits.is_naive(at):  # "2020": AttributeError
            raise ValueError(f"freeze_time needs a timezone-aware datetime, not {limits.shown(at)}")
        self.now = limits.moment(at, "freeze_time")  # InvalidOption is a ValueError
        return self.now

    def advance(self, delta: timedelta | None = None, **units: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**units)``; return the new time."""
        step = _step(delta, units)
        if step < timedelta(0):
            raise ValueError("time only moves forward; use set() to go back")
        try:
            return self.set(self.now + step)
        except OverflowError:
            raise ValueError(
                f"advancing {self.now.isoformat()} by {step} reaches past "
                f"{datetime.max.isoformat()}, the last time Python holds"
            ) from None


def _step(delta: Any, units: dict[str, Any]) -> timedelta:
    """``advance``'s step, InvalidOption if it is none: handed straight to timedelta(),
    ``years=1`` or ``seconds=nan`` raised its TypeError or ValueError, ``days=10**12``
    an OverflowError, and a delta given with units dropped the units."""
    if delta is not None:
        if units:
            raise InvalidOption("advance", "takes a timedelta or units, not both")
        if not isinstance(delta, timedelta):
            raise InvalidOption("advance", f"must be a timedelta, not {limits.shown(delta)}")
        return delta
    try:
        return timedelta(**units)
    except (TypeError, ValueError, OverflowError):
        given = ", ".join(f"{name}={limits.shown(value)}" for name, value in units.items())
        raise InvalidOption(
            "advance",
            f"{given} is no length of time: use timedelta's units (days, seconds, "
            "microseconds, milliseconds, minutes, hours, weeks) as finite numbers",
        ) from None


@contextmanager
def freeze_time(at: datetime | None = None) -> Iterator[FrozenClock]:
    """Stop the clock pgjobs reads (``django.utils.timezone.now``) at ``at`` (default: now).

    Enqueueing, claiming, backoff and ``drain()`` all use it, so a test can
    enqueue a job for tomorrow, ``clock.advance(days=1)`` and ``drain()``.
    Code that reads ``datetime.now()`` or ``time.time()`` directly is not
    affected: use a library such as time-machine for that; pgjobs follows it too.
    """
    clock = FrozenClock(at or timezone.now())
    with mock.patch.object(timezone, "now", clock):
        yield clock
