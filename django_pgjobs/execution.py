"""Running one claimed job and recording its outcome."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import DatabaseError, connections
from django.utils import timezone

from . import (
    conf,
    db,
    leftovers,
    limits,
    loaded,
    logs,
    middleware,
    outage,
    payload,
    sending,
    signals,
    transitions,
)
from .backoff import Backoff
from .connectors import runtime as connector_runtime
from .context import JobContext, _current
from .dependencies import results_of_dependencies
from .events import Change
from .exceptions import (
    ArgumentMismatch,
    DiscardJob,
    JobTimeout,
    PayloadError,
    RetryAfter,
    Snooze,
    TransactionLeftOpen,
    UnknownTask,
    UnrunnableJob,
)
from .limits import shown
from .models import Job
from .states import JobState
from .tasks import Task, get_task, registered_or_none
from .transitions import Outcome

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class _GivenUp(Exception):
    """The worker failed the job at its timeout before its task was called."""


def call_task(registered: Task[Any, Any], context: JobContext) -> Any:
    """Call the task function inside the execute hooks of ``PGJOBS["MIDDLEWARE"]``;
    async functions get an event loop of their own."""
    context.thread_id = threading.get_ident()
    context.started = time.monotonic()
    # Looked at last before the call: a job the worker gave up on at its timeout is not
    # called (its failure is written, a retry may run elsewhere). Given up on after
    # this, the task runs on a thread the worker has retired, as one blocked past its
    # timeout (Worker._give_up_on replaces the thread either way).
    if context.abandoned:
        raise _GivenUp
    token = _current.set(context)
    try:
        hooks = middleware.chain().execute
        if not hooks:
            return _call_with_inputs(registered, context)
        return middleware.execute(context, lambda: _call_with_inputs(registered, context), hooks)
    finally:
        _current.reset(token)


def _call_with_inputs(registered: Task[Any, Any], context: JobContext) -> Any:
    """Call the task with its dependencies' results and its connector, if it takes them."""
    job = context.job
    args, kwargs = _typed_inputs(registered, job) if registered.typed else (job.args, job.kwargs)
    if job.meta.get("pass_results"):  # a gather job of a pipeline
        kwargs = {**kwargs, "results": results_of_dependencies(job)}
    if not job.connector:
        _check_binding(registered, job, args, kwargs)
        return _call(registered, context, args, kwargs)
    with connector_runtime.attached(context):
        kwargs = {**kwargs, **connector_runtime.injected(registered.func, context)}
        _check_binding(registered, job, args, kwargs)
        return _call(registered, context, args, kwargs)


def _check_binding(registered: Task[Any, Any], job: Job, args: Any, kwargs: Any) -> None:
    """A plain task's arguments that can't bind to its function in this worker: enqueued
    by newer code (a rolling deploy), or the function changed since. ArgumentMismatch
    saying which, rather than the call's TypeError: the attempt is retried (_skewed)."""
    binding = registered.binding
    if binding is None:
        return
    try:
        binding.check(args, kwargs, enqueue=False)
    except PayloadError as error:
        raise _mismatch(job, "parameters", error) from None


def _typed_inputs(registered: Task[Any, Any], job: Job) -> tuple[list[Any], dict[str, Any]]:
    """A typed task's stored arguments as the typed values it declares; a row that
    doesn't fit them in this worker (enqueued by newer code, or the task's signature
    changed since): ArgumentMismatch saying why, and the attempt is retried (_skewed)."""
    try:
        signature = registered.signature
        return signature.parse(job.args, job.kwargs, bool(job.connector))  # type: ignore[union-attr]
    except PayloadError as error:
        raise _mismatch(job, "types", error) from None


def _mismatch(job: Job, fit: str, error: PayloadError) -> ArgumentMismatch:
    return ArgumentMismatch(job.pk, fit, str(error), retried=_attempts_left(job))


def _attempts_left(job: Job) -> bool:
    """Whether a failed attempt of ``job`` leaves it another (transitions.failed)."""
    return job.attempt < job.max_attempts


def _call(registered: Task[Any, Any], context: JobContext, args: list, kwargs: dict) -> Any:
    if not registered.is_async:
        result = registered.func(*args, **kwargs)
    else:
        result = _run_coroutine(registered, context, args, kwargs)
    if isinstance(result, Snooze):  # returned rather than raised: the same to everyone
        raise result
    return result


def _run_coroutine(
    registered: Task[Any, Any], context: JobContext, args: list, kwargs: dict
) -> Any:
    job = context.job

    async def with_timeout() -> Any:
        if middleware.chain().execute_async:
            coroutine = middleware.execute_async(context, lambda: registered.func(*args, **kwargs))
        else:
            coroutine = registered.func(*args, **kwargs)
        if job.timeout is None:
            return await coroutine
        try:
            return await asyncio.wait_for(coroutine, job.timeout)
        except TimeoutError:
            raise JobTimeout.exceeded(job.timeout) from None

    loop = asyncio.new_event_loop()
    try:
        with leftovers.orm_calls_on_this_threads_executor():
            context.task = loop.create_task(with_timeout())
        context.loop = loop
        if context.cancelled:  # cancelled before the loop existed
            context.task.cancel()
        return loop.run_until_complete(context.task)
    finally:
        context.loop = None
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _storable(job: Job, result: Any, context: JobContext) -> Any:
    """The result to store: itself, or a stand-in saying why it can't be (not JSON, a
    NUL, too large, ...). A result the database refused would fail the outcome write
    of every job written with it."""
    stored, why = payload.storable_result(
        result, conf.get("MAX_PAYLOAD_BYTES"), functools.partial(_masked_excerpt, context)
    )
    if why is not None:
        # Its type only: the value may hold what the job's redactor masks in the result.
        kind = type(result).__name__
        logger.warning("job %s: its result (a %s) can't be stored; storing its repr", job.pk, kind)
    return stored


def _masked_excerpt(context: JobContext, text: str, width: int) -> str:
    """``text`` cut to ``width`` with the job's secrets masked before the cut: masked
    after it, a secret the cut split in two left its first part."""
    if context.redactor is not None:
        text = context.redactor.head(text, width + 1)  # one more: the cut says "..."
    return limits.shortened(text, width)


def unrunnable(job: Job) -> str | None:
    """Why a claimed job can't run as its row stands, or None: a row written around
    ``Job.enqueue`` (by SQL, an old version, a bug) whose JSON Python can't read
    back, or whose arguments are not an array and an object."""
    problem = getattr(job, "unreadable", None)
    if problem:
        return problem
    for name, kind, json_name in _SHAPES:
        value = job.__dict__[name]
        if type(value) is not kind:
            return f"its {name} is {_json_type(value)}, not a JSON {json_name}"
    return None


_SHAPES = (("args", list, "array"), ("kwargs", dict, "object"), ("meta", dict, "object"))


def _json_type(value: Any) -> str:
    if isinstance(value, payload.Unreadable):
        return f"unreadable: {value.problem}"
    names = {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}
    return "null" if value is None else names.get(type(value), f"a JSON {type(value).__name__}")


def execute(job: Job, clock: Clock = timezone.now, context: JobContext | None = None) -> str:
    """Run ``job`` (already claimed, state executing) and write its outcome.

    Returns the state the job ended in, or "lost" if its lease was taken away
    while it ran (rescued, cancelled, timed out by the worker). Never raises
    for anything the task does.
    """
    return record([run(job, clock, context)])[0]


def run(job: Job, clock: Clock = timezone.now, context: JobContext | None = None) -> Outcome | str:
    """Run the task of a claimed job and return its outcome, not yet written.

    Writing is left to the caller so that a worker can write the outcomes of
    many jobs in one statement (``record``). A job that could not start (its
    connector is busy) is snoozed here and then, and the state it ended in is
    returned instead. Never raises for anything the task does.
    """
    not_loaded = _load_deferred(job, clock)
    if not_loaded is not None:
        return not_loaded
    context = context or JobContext(job)
    # A receiver that raises is logged, and the job runs all the same (sending.py).
    sending.send(signals.job_started, "job_started", job, Job, job=job)
    if context.abandoned:  # failed at its timeout while a receiver held it: not ours
        return "lost"  # (call_task looks again, up to the task's call)
    outcome = _attempt(job, clock, context)
    loaded.release(job)  # not held while the outcome waits to be written
    if context.redactor and isinstance(outcome, Outcome):
        outcome.redactor = context.redactor  # the secrets of the connectors it loaded
    return outcome


def _load_deferred(job: Job, clock: Clock) -> Outcome | str | None:
    """Read the values too large for the job's claim to send (loaded.py), on its own
    thread, before anything reads its arguments (signal receivers, middleware, the
    task): None once read. "lost" if it was taken away since its claim (rescued,
    cancelled): not ours to run, nothing written. A failed attempt, retried by its
    queue's backoff, if the database could not be reached: as a task's would be."""
    try:
        return None if loaded.load_deferred(job) else "lost"
    except db.CONNECTION_TROUBLE as error:
        connections[job._state.db or conf.get("DATABASE")].close()  # the next job reconnects
        return failed_attempt(job, error.with_traceback(None), clock(), None)


def _attempt(job: Job, clock: Clock, context: JobContext) -> Outcome | str:
    problem = unrunnable(job)
    if problem:  # its discard's warning says why (_log_outcome)
        return transitions.failed(job, UnrunnableJob(job.pk, problem), clock(), discard=True)
    try:
        registered = get_task(job.task)
    except UnknownTask:
        # Its own error, saying why this worker can't run it (not how to enqueue it).
        error = UnknownTask.in_worker(job.task, retried=_attempts_left(job))
        return _skewed(job, error, clock(), None, context)
    try:
        result = _call_and_tidy_up(registered, context)
    except _GivenUp:
        return "lost"  # not ours to run: nothing is written (see call_task)
    except Snooze as snooze:  # not now (the task said so, or its connector): not counted
        connector_runtime.throttle_again(snooze)
        now = clock()
        return _snooze(job, snooze.wake_at(now), now, context.mask(snooze.reason))
    except ArgumentMismatch as error:
        return _skewed(job, error.with_traceback(None), clock(), registered, context)
    except (DiscardJob, UnrunnableJob) as error:  # Unrunnable: its inputs (dependencies)
        return transitions.failed(job, error, clock(), discard=True)
    except BaseException as error:  # a task's failure, even SystemExit, is data
        outcome = failed_attempt(job, _timeout_said(job, error), clock(), registered)
        # One line per event: a failure that discards the job is said by the discard's
        # warning once it is written (_log_outcome), not by this line as well; nor is a
        # job cancelled while it ran retried (its outcome is refused: _log_refused).
        if outcome.state == JobState.RETRYABLE and not context.cancelled:
            _log_retry(outcome, lambda: context.mask(transitions.error_line(error)))
        return outcome
    return transitions.completed(job, _storable(job, result, context), clock())


def _timeout_said(job: Job, error: BaseException) -> BaseException:
    """``error``, saying which timeout if it is the worker's interrupt at the job's
    timeout: that raises the bare class in the job's thread (an exception instance
    can't be raised there), and the error record said "JobTimeout: " and no more."""
    if type(error) is JobTimeout and not error.args:
        error.args = JobTimeout.exceeded(job.timeout).args
    return error


def _log_retry(outcome: Outcome, failure: Callable[[], str]) -> None:
    """The line of a failed attempt that will be retried: when, and its error as the
    job's error record says it (``failure``, only worked out when the line is logged)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    job = outcome.job
    # When it runs again: a newcomer's log said it failed, not that it would retry.
    # Its queue's row unreadable as it failed: known once its outcome is written.
    retry_in = (
        f"in {logs.delay((outcome.run_at - outcome.at).total_seconds())}"
        if outcome.run_at
        else "by its queue's backoff"
    )
    logger.info(
        "job %s (%s) attempt %s of %s failed, retry %s: %s",
        job.pk,
        logs.printable(job.task),
        job.attempt,
        job.max_attempts,
        retry_in,
        logs.one_line(limits.shortened(failure(), 500)),
        extra=logs.job_fields(job),
    )


def log_abandoned(outcome: Outcome, error: JobTimeout) -> None:
    """What became of a job the worker failed itself, written: its task ignored the
    timeout (blocked in C), so no failure of the task's own is logged for it."""
    if outcome.state == JobState.RETRYABLE:
        _log_retry(outcome, lambda: transitions.error_line(error))
    else:
        _log_outcome(outcome)


def _skewed(
    job: Job,
    error: UnknownTask | ArgumentMismatch,
    now: datetime,
    registered: Task[Any, Any] | None,
    context: JobContext,
) -> Outcome:
    """A job this worker's code can't run but newer code may (its task unknown here, its
    arguments not fitting): in a rolling deploy web processes may enqueue for code that
    some workers don't run yet. An ordinary failed attempt, retried with the job's backoff
    until its attempts are used up; the task's ``discard_on``/``retry_on`` judge what the
    task raises, and it never ran. One warning per attempt, no traceback: nothing failed
    in any code (a discard is said by its own warning, _log_outcome)."""
    outcome = _retried(job, error, now, registered)
    if outcome.state == JobState.RETRYABLE:
        logger.warning(
            "job %s (%s) attempt %s can't run on this worker: %s",
            job.pk,
            logs.printable(job.task),
            job.attempt,
            logs.one_line(limits.shortened(context.mask(transitions.error_line(error)), 1000)),
            extra=logs.job_fields(job),
        )
    return outcome


def _call_and_tidy_up(registered: Task[Any, Any], context: JobContext) -> Any:
    """``call_task``, then tidy up this thread's connections (and, for an async task,
    its ORM thread's): broken ones are closed, and if the task left a transaction
    open, it is rolled back and the attempt fails with ``TransactionLeftOpen`` (or,
    if it failed anyway, its error says so in a note).
    """
    before = leftovers.snapshot()
    try:
        result = call_task(registered, context)
    except BaseException as error:
        left = _tidy_up(before, registered)
        if left:
            error.add_note(str(TransactionLeftOpen(left)))
        raise
    left = _tidy_up(before, registered)
    if left:
        raise TransactionLeftOpen(left)
    return result


def _tidy_up(before: leftovers.Snapshot, registered: Task[Any, Any]) -> dict[str, str]:
    left = leftovers.tidy(before)
    if registered.is_async:
        left.update(leftovers.tidy_orm_thread())
    return left


def failed_attempt(
    job: Job, error: BaseException, now: datetime, registered: Task[Any, Any] | None
) -> Outcome:
    """What a failed attempt leads to. ``RetryAfter`` sets the next attempt's time;
    the task's ``discard_on`` and ``retry_on`` may discard the job at once; else it is
    retried when the task's backoff says, or its queue's (discarded, either way, once
    its attempts are used up)."""
    if isinstance(error, RetryAfter):
        return transitions.failed(job, error, now, run_at=error.wake_at(now))
    if registered is not None and registered.gives_up_on(error):
        return transitions.failed(job, error, now, discard=True)
    return _retried(job, error, now, registered)


def _retried(
    job: Job, error: BaseException, now: datetime, registered: Task[Any, Any] | None
) -> Outcome:
    """A failed attempt retried when the task's backoff says, or its queue's (discarded
    once the job's attempts are used up)."""
    if registered is None:
        return _by_queue_backoff(job, error, now, None)
    if registered.backoff is None or isinstance(registered.backoff, Backoff):
        return _by_queue_backoff(job, error, now, registered.backoff)
    run_at = _task_backoff(job, error, now, registered)
    if run_at is None:
        return _by_queue_backoff(job, error, now, None)
    return transitions.failed(job, error, now, run_at=run_at)


def _task_backoff(
    job: Job, error: BaseException, now: datetime, registered: Task[Any, Any]
) -> datetime | None:
    """When the task's backoff function says the next attempt runs; None (and an error
    logged) if it raised or gave no number of seconds from 0 up to a year."""
    try:
        delay = registered.backoff(job.attempt, error)  # type: ignore[operator]
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        return now + timedelta(seconds=limits.seconds(delay, "backoff", zero=True))
    except Exception as problem:  # the task's own code: any failure is possible
        logger.error(
            "job %s (%s): its backoff function failed (%s); using the queue's backoff",
            job.pk,
            logs.printable(job.task),
            shown(problem, 300),
        )
        return None


def _by_queue_backoff(
    job: Job, error: BaseException, now: datetime, backoff: Backoff | None
) -> Outcome:
    try:
        # Without a backoff of its own the job's queue decides, which takes a read.
        return transitions.failed(job, error, now, backoff=backoff)
    except DatabaseError as problem:
        # Not the default backoff instead: seconds, where the queue may spare a
        # rate-limited service for minutes. Read again as the outcome is written.
        logger.warning(
            "job %s: its queue's backoff could not be read (%s); read again as its "
            "outcome is written",
            job.pk,
            shown(problem, 300),
        )
        leftovers.drop_broken()
        return transitions.failed_by_queue_later(job, error, now)


def _snooze(job: Job, until: datetime, now: datetime, reason: str) -> str:
    """Put a job that could not start back until ``until`` (lease-checked), now."""
    snoozed = through_outage(
        lambda: transitions.snooze(job, until, now, reason), f"snooze job {job.pk}"
    )
    if snoozed is None:
        return "unrecorded"
    if snoozed and logs.jobs_logger.isEnabledFor(logging.INFO):
        # At -v 2, which prints every job: a job snoozing for ever said nothing.
        logs.jobs_logger.info(
            "job %s (%s) snoozed, runs again in %s%s",
            job.pk,
            logs.printable(job.task),
            logs.delay(_seconds_between(now, until)),
            f": {logs.one_line(reason)}" if reason else "",
            extra=logs.job_fields(job),
        )
    return job.state if snoozed else "lost"


def _seconds_between(now: datetime, until: datetime) -> float:
    """``until - now`` in seconds, where a naive time (a task's own, with USE_TZ off) is
    in TIME_ZONE, as the database stores it: naive minus aware was a TypeError."""
    zone = timezone.get_default_timezone()
    if timezone.is_naive(until):
        until = timezone.make_aware(until, zone)
    if timezone.is_naive(now):
        now = timezone.make_aware(now, zone)
    return (until - now).total_seconds()


T = TypeVar("T")


#: Seconds a write is retried through a database outage before it is given up on,
#: by callers that have something better to do then (see ``record``).
OUTAGE_WINDOW = 60.0

#: How many times a write that failed for a transient reason (``db.transient``: a
#: statement timeout, lock timeout, deadlock, serialization failure) is tried in all
#: before its error is raised to the caller (see ``through_outage``).
TRANSIENT_TRIES = 3

#: Most seconds between two tries of a write through a database outage: 0.1 s after
#: the first failure, then twice as long each time (cut short once it is back).
OUTAGE_RETRY_MAX = 5.0


def through_outage(
    write: Callable[[], T],
    what: str,
    give_up_after: float | None = OUTAGE_WINDOW,
    tries: int = TRANSIENT_TRIES,
) -> T | None:
    """``write()``, retried through a database outage for ``give_up_after`` seconds
    (None: for as long as it takes); None if the database stayed away. The calling
    thread has nothing else to do meanwhile.

    Connection trouble is told by its SQLSTATE (``db.connection_trouble``), not the
    exception's class: a statement timeout, lock timeout or deadlock (a site's trigger
    on one job's row, say) is no outage, and was retried as one for ever, warned each
    time, holding up a worker's completer and every outcome after it. Such a transient
    error is tried ``tries`` times in all, a moment apart, then raised as any other
    refusal is at once: the caller decides (``Completer._write_batch`` writes the batch's
    outcomes one by one, so the refused one costs its job alone, and keeps an outcome a
    transient error held to try again later, once at a time)."""
    backoff = outage.Doubling(OUTAGE_RETRY_MAX)
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    using = db.alias()
    tried = 0
    while True:
        began, seen = time.monotonic(), outage.generation(using)
        try:
            written = write()
        except db.CONNECTION_TROUBLE as error:
            if not db.connection_trouble(error):
                tried += 1
                if not db.transient(error) or tried >= tries:
                    raise
                logger.debug("could not %s: %s; trying again", what, outage.describe(error))
                time.sleep(0.1 * tried)
                continue
            if deadline is not None and time.monotonic() > deadline:
                logger.error("could not %s: %s", what, error)
                return None
            outage.unreachable(using, error)  # said once per outage, not per retry
            for conn in connections.all(initialized_only=True):
                conn.close()
            # Drawn (a fleet's completers out of step) and cut short when the database is back.
            outage.pause(using, outage.spread(backoff.failed()), since=seen)
        else:
            if backoff.failures:  # back after a failure, on a new connection
                outage.reachable(using, began)
            return written


def record(
    items: Sequence[Outcome | str],
    publish: Callable[[Iterable[Change]], None] | None = None,
    *,
    give_up_after: float | None = OUTAGE_WINDOW,
    tries: int = TRANSIENT_TRIES,
) -> list[str]:
    """Write outcomes (one statement), retrying through a database outage for
    ``give_up_after`` seconds (None: until it is back).

    Returns, for each, the state its job ended in, "lost" if its lease was taken
    away, or "unrecorded" if the database stayed away: such a job stays
    executing under our lease and is rescued once this process's worker is gone
    (or, under a live worker, once it sees it no longer holds the job). Items
    that are already a state (see ``run``) are passed through. A started
    worker's completer never gives up (see ``Completer._write_batch``). A transient
    error (``db.transient``) is tried ``tries`` times in all, then raised.
    """
    outcomes = [item for item in items if isinstance(item, Outcome)]
    if not outcomes:
        return [str(item) for item in items]
    written = through_outage(
        lambda: transitions.finish(outcomes, publish),
        f"record {len(outcomes)} outcome(s)",
        give_up_after,
        tries,
    )
    if written is None:
        return [item if isinstance(item, str) else "unrecorded" for item in items]
    states = iter(written)
    ended = []
    refused = []
    for item in items:
        if not isinstance(item, Outcome):
            ended.append(item)
        elif next(states):
            ended.append(item.job.state)
            _log_outcome(item)
        else:
            refused.append(item)
            ended.append("lost")
    if refused:
        _log_refused(refused)
    return ended


def _log_outcome(outcome: Outcome) -> None:
    """A discard is a warning with its error, the one line of the attempt that ended
    in it (a retried attempt's failure is logged when it fails); a completion is a
    line at verbosity 2 (``logs.jobs_logger``)."""
    job = outcome.job
    if outcome.state == JobState.DISCARDED:
        last = job.errors[-1] if isinstance(job.errors, list) and job.errors else None
        error = last.get("error") if isinstance(last, dict) else None
        if isinstance(error, str):
            error = logs.one_line(error)
        logger.warning(
            "job %s (%s) discarded after attempt %s%s: %s",
            job.pk,
            logs.printable(job.task),
            job.attempt,
            _given_up_early(outcome),
            error,
            extra=logs.job_fields(job),
        )
    elif outcome.state == JobState.COMPLETED and logs.jobs_logger.isEnabledFor(logging.INFO):
        took = (outcome.at - job.attempted_at).total_seconds() if job.attempted_at else None
        logs.jobs_logger.info(
            "job %s (%s) completed%s",
            job.pk,
            logs.printable(job.task),
            f" in {took:.3f}s" if took is not None else "",
            extra=logs.job_fields(job),
        )


def _given_up_early(outcome: Outcome) -> str:
    """Why a job with attempts left was discarded, for its log line: "discarded after
    attempt 1" of a job allowed 20 left a newcomer wondering. Empty when its attempts
    are used up, or its error says why (a row it can't run as stored)."""
    job, error = outcome.job, outcome.error
    if error is None or job.attempt >= job.max_attempts:
        return ""
    left = f" of {job.max_attempts}"
    if isinstance(error, DiscardJob):
        return f"{left} (DiscardJob)"
    registered = registered_or_none(job.task)
    if registered is None:
        return ""
    if registered.discard_on and isinstance(error, registered.discard_on):
        return f"{left} (its task's discard_on)"
    if registered.retry_on and not isinstance(error, registered.retry_on):
        return f"{left} (not in its task's retry_on)"
    return ""


def _log_refused(outcomes: list[Outcome]) -> None:
    """Say why outcomes were refused: an operator's cancel or delete is no news
    worth a warning, nor our own write that landed before the connection broke (the
    server went away before its answer came: retried, it finds the job no longer
    executing); a lease taken away (the job was rescued) is."""
    using = outcomes[0].job._state.db or conf.get("DATABASE")
    try:
        rows = Job.objects.using(using).filter(pk__in=[o.job.pk for o in outcomes])
        stored = {
            pk: rest for pk, *rest in rows.values_list("pk", "state", "finished_at", "run_at")
        }
    except DatabaseError:
        stored = None
    for outcome in outcomes:
        job = outcome.job
        if stored is None:
            logger.warning("job %s: outcome refused, its lease was taken away", job.pk)
            continue
        state, finished_at, run_at = stored.get(job.pk, (None, None, None))
        if state is None:
            logger.info("job %s: deleted while it ran; its outcome was dropped", job.pk)
        elif state == "cancelled":
            logger.info("job %s: cancelled while it ran; its outcome was dropped", job.pk)
        elif state == outcome.state and (
            finished_at == outcome.at if finished_at else run_at == outcome.run_at
        ):
            logger.info(
                "job %s: its outcome was written already (the connection broke before "
                "the answer came)",
                job.pk,
            )
        else:
            logger.warning("job %s: outcome refused, its lease was taken away", job.pk)
