"""Errors raised to users. Each says what was wrong and what to do instead."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from django.db.utils import IntegrityError

from .pickling import PickledWhole
from .states import InvalidTransition


class PgJobsError(PickledWhole, Exception):
    """Base class for errors raised by django-pgjobs (each survives pickle whole)."""


def _named(value: object) -> str:
    """``repr(value)`` for a name in a message, cut past any name a row can hold: an
    int of 5,000 digits given as a queue made ``repr`` raise ValueError instead of the
    error, and a megabyte of text was carried whole in it."""
    from .limits import shown

    return shown(value, 300)


class UnknownTask(PgJobsError, LookupError):
    def __init__(self, name: str, hint: str = "", where: str = "") -> None:
        self.name = name
        message = (
            f"unknown task {_named(name)}: no function decorated with @task has that "
            f"dotted path{where}"
        )
        super().__init__(f"{message}. {hint}" if hint else message)

    @classmethod
    def in_worker(cls, name: str, retried: bool) -> UnknownTask:
        """What a worker records on a job of a task it doesn't know: newer code may."""
        return cls(name, skew_hint(retried, _not_found_because(name)), where=" in this worker")


#: Where a worker finds tasks, as its errors and its start line say it.
WHERE_TASKS_ARE_FOUND = (
    "a worker imports the tasks.py module of each installed app and the modules of "
    "PGJOBS['TASK_MODULES']"
)


def _not_found_because(name: str) -> str:
    """Why a worker may not know task ``name`` but for older code: its module, named,
    was never imported here (a shop/jobs.py only a view imports), or was and defines no
    such task. Looked up in ``sys.modules`` only: a job's name is never imported."""
    module = name.rpartition(".")[0] if isinstance(name, str) else ""
    if not module:
        return (
            "the task's module is not imported at startup (define it in an installed "
            "app's tasks.py, or list its module in PGJOBS['TASK_MODULES'])"
        )
    if module in sys.modules:
        return (
            f"its module {_named(module)}, imported in this worker, has no function of "
            "that name decorated with @task"
        )
    return (
        f"its module {_named(module)} is not imported in this worker: "
        f"{WHERE_TASKS_ARE_FOUND} (list it there)"
    )


def skew_hint(retried: bool, other_cause: str) -> str:
    """What a worker adds to an error of a job its code can't run but newer code may (a
    rolling deploy starts web processes before every worker runs their code): the
    attempt failed and the job is retried, or, once its attempts are used up, what to do."""
    # The first cause a developer meets: a worker left running while they wrote the task.
    cause = (
        "This worker's code may be older than the code that enqueued the job (it started "
        "before the task was added or changed: restart it; or a rolling deploy is under "
        f"way), or {other_cause}"
    )
    if retried:
        return f"{cause}: retried, as a worker running newer code may run it"
    return (
        f"{cause}: its attempts are used up, so it is discarded; retry it once every "
        "worker runs the code that enqueued it"
    )


class UnknownQueue(PgJobsError, LookupError):
    def __init__(self, name: str, close: str | None = None) -> None:
        self.name = name
        meant = f" (did you mean {_named(close)}?)" if close else ""
        super().__init__(
            f"unknown queue {_named(name)}{meant}: "
            "declare it in PGJOBS['QUEUES'] or create it in the admin"
        )


class InvalidQueueName(PgJobsError, ValueError):
    def __init__(self, name: object) -> None:
        super().__init__(
            f"invalid queue name {_named(name)}: use 1-63 letters, digits, '_', '-', '.' or ':'"
        )


class PayloadError(PgJobsError, TypeError):
    """args/kwargs (or meta) that can't be stored as JSON, or are too large.

    ``field`` names the argument at fault ("args", "kwargs" or "meta") when known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidArguments(PayloadError):
    """Arguments that don't fit a task's signature (its parameters; a typed task's
    types too); ``field`` is where, e.g. ``kwargs['when']`` or ``args[1].quantity``.
    Also importable from ``django_pgjobs.typed``."""


class InvalidOption(PgJobsError, ValueError):
    """An option of a job, a task, a queue or a schedule that no job row can hold or
    no worker can run (a ``run_at`` outside years 1-9999, a timeout that is not a
    finite number, a priority beyond -32768..32767, ...); ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")


class UniqueKeyConflict(PgJobsError, IntegrityError):
    """An enqueue whose ``unique_key`` is held by an active job this transaction can't
    read: one committed after its snapshot, under REPEATABLE READ or SERIALIZABLE (or,
    at READ COMMITTED, holders that kept finishing as it looked). The unique index
    refused the insert (for a ``unique_for`` task, a look on a connection of its own
    found a job of the window, finished or not, committed so); nothing was written
    and the transaction is still usable, but under its snapshot the holder stays out
    of sight: retry the whole transaction, as for a serialization failure, and the
    enqueue returns the holder (``is_duplicate``).
    Also a bulk retry's (``retry_many``), whose UPDATE the index kept refusing for a
    finished job's key so held: nothing was retried (``done``); ``queue`` and ``key``
    are None if the database did not say which key.
    An ``IntegrityError`` still, as the raw one raised before it was."""

    def __init__(
        self,
        queue: str | None,
        key: str | None,
        isolation: str = "",
        done: str = "nothing was enqueued; retry the transaction (it then returns that job)",
    ) -> None:
        self.queue, self.key, self.isolation, self.done = queue, key, isolation, done
        why = (
            f"committed after this {isolation.upper()} transaction's snapshot"
            if isolation and isolation != "read committed"
            else "that kept finishing before it could be read"
        )
        which = (
            f"unique_key {_named(key)} of queue {_named(queue)}"
            if key is not None
            else "a unique_key"
        )
        super().__init__(f"{which} is held by a job {why}: {done}")


class JobGone(PgJobsError, InvalidTransition):
    """An operator action (retry, cancel) on a job whose row is gone: deleted, or
    pruned once finished, since it was read; or a wait for it (``wait``,
    ``async_wait``, ``to_state`` None). Nothing was written. An
    ``InvalidTransition`` too, so code that catches that one keeps working."""

    def __init__(self, job_id: int | None, to_state: str | None = None) -> None:
        self.job_id, self.from_state, self.to_state = job_id, None, to_state
        said = (
            f"job {job_id} no longer exists (it was deleted or pruned)"
            if job_id is not None  # None: deleted by its own delete(), which clears its id
            else "the job no longer exists (it was deleted: delete() clears its id)"
        )
        Exception.__init__(self, said)


class UniqueKeyHeld(PgJobsError, InvalidTransition):
    """A retry of a finished job whose ``unique_key`` another active job of its queue
    holds now (``holder_id``; None if it finished before it could be read): the job
    would hold the key beside it, which the unique index refuses. Nothing was written
    and the transaction is still usable. An ``InvalidTransition`` too."""

    def __init__(self, job_id: int | None, queue: str, key: str, holder_id: int | None) -> None:
        self.job_id, self.from_state, self.to_state = job_id, None, "available"
        self.queue, self.key, self.holder_id = queue, key, holder_id
        holder = f"active job {holder_id}" if holder_id is not None else "an active job"
        self.why = (
            f"its unique_key {_named(key)} of queue {_named(queue)} is held by {holder}; "
            "nothing changed (cancel that job, or retry this one once it has finished)"
        )
        Exception.__init__(self, f"job {job_id}: can't retry it: {self.why}")


class JobTimeout(PgJobsError):
    """The attempt ran longer than its job's timeout."""

    @classmethod
    def exceeded(cls, timeout: float | None, how: str = "") -> JobTimeout:
        """The error of an attempt past its job's ``timeout`` (seconds), ``how`` it
        ended after: every way a worker times out an attempt says the same."""
        return cls(f"attempt exceeded its timeout of {timeout}s{how}")


class JobCancelled(PgJobsError):
    """Raised in a task (by ``raise_if_cancelled``) whose job was cancelled."""


class DiscardJob(PgJobsError):
    """Raise from a task to fail the job for good, without further attempts."""


class _Later(PgJobsError):
    """An exception that says when the job should run next: in ``seconds`` (a number
    from 0 up to a year) or at ``until`` (a timezone-aware datetime; naive, local time
    in TIME_ZONE with USE_TZ off, as run_at). Anything else raises ``InvalidOption`` at
    once, which fails the attempt like any error."""

    def __init__(self, seconds: float | None, until: datetime | None, said: str) -> None:
        from . import limits

        name = type(self).__name__
        if (seconds is None) == (until is None):
            raise InvalidOption(name, "takes either seconds or until=, not both or neither")
        self.seconds = None if seconds is None else limits.seconds(seconds, "seconds", zero=True)
        self.until = None if until is None else limits.instant(until, "until")
        self.said = said if isinstance(said, str) else limits.shown(said)
        super().__init__(self.said)

    def when(self) -> str:
        """ "in 30s" or "at <instant>"."""
        if self.until is not None:
            return f"at {self.until.isoformat()}"
        return f"in {self.seconds:g}s"

    def wake_at(self, now: datetime) -> datetime:
        """When the job may run again, seen at ``now``."""
        if self.until is not None:
            return self.until
        return now + timedelta(seconds=self.seconds or 0.0)


class Snooze(_Later):
    """Raise (or return) from a task: not now, run again in ``seconds`` (or at
    ``until``). The attempt is not counted and no error is recorded: the job waits
    (``scheduled``), and its page shows the snooze and ``reason``
    (docs/flow-control.md)."""

    def __init__(
        self, seconds: float | None = None, *, until: datetime | None = None, reason: str = ""
    ) -> None:
        super().__init__(seconds, until, reason)

    @property
    def reason(self) -> str:
        return self.said

    def __str__(self) -> str:
        then = f"snoozed, to run {self.when()}"
        return f"{self.said}: {then}" if self.said else then


class RetryAfter(_Later):
    """Raise from a task: this attempt failed, and the next one should run in
    ``seconds`` (or at ``until``) rather than when the backoff says (the
    ``Retry-After`` of an answer, say). The attempt counts, and ``message`` is its
    recorded error; with no attempt left the job is discarded."""

    def __init__(
        self, seconds: float | None = None, *, until: datetime | None = None, message: str = ""
    ) -> None:
        super().__init__(seconds, until, message)

    def __str__(self) -> str:
        then = f"asked to retry {self.when()}"
        return f"{self.said} ({then})" if self.said else then


class TransactionLeftOpen(PgJobsError):
    """The task left a transaction open on a database connection; it was rolled back.

    The attempt fails (and is retried like any failure): what the task wrote in
    that transaction was never committed.
    """

    def __init__(self, left: dict[str, str]) -> None:
        self.left = left
        where = "; ".join(f"on database {alias!r}, {what}" for alias, what in left.items())
        super().__init__(
            f"the task left a transaction open ({where}): it was rolled back, so what the "
            "task wrote in it was not committed. Use atomic() as a context manager or "
            "decorator, and commit or roll back what you begin"
        )


class UnrunnableJob(PgJobsError):
    """Recorded on a job a worker claimed but no code could run as its row stands: written
    around ``Job.enqueue`` (by SQL, an old version, a bug), with JSON Python can't read
    back, arguments that are not an array and an object, a value psycopg can't load. The
    job is discarded at once, its row kept. (Arguments that don't fit the task's
    parameters in this worker are ``ArgumentMismatch``, retried.)"""

    def __init__(self, job_id: object, problem: str) -> None:
        super().__init__(
            f"job {job_id} can't run as stored: {problem} (a row written around "
            "Job.enqueue: by SQL, an old version or a bug; fix it and retry the job)"
        )


class ArgumentMismatch(PgJobsError):
    """Recorded on a job whose stored arguments don't fit its task's parameters (or a
    typed task's types) in the worker that claimed it: its code may be older than the
    code that enqueued the job. An ordinary failed attempt: retried, with backoff."""

    def __init__(self, job_id: object, fit: str, problem: str, retried: bool) -> None:
        hint = skew_hint(
            retried, "the task's signature changed since the job was enqueued (or SQL wrote it)"
        )
        super().__init__(
            f"job {job_id}: its arguments don't fit the task's {fit} in this worker: "
            f"{problem}. {hint}"
        )


class WorkerLost(PgJobsError):
    """Recorded by rescue on a job whose worker stopped heartbeating while running it."""


class UnknownConnector(PgJobsError, LookupError):
    def __init__(self, name: object, close: str | None = None) -> None:
        self.name = name
        meant = f" (did you mean {_named(close)}?)" if close else ""
        super().__init__(
            f"unknown connector {_named(name)}{meant}: "
            "create it in the admin (Background jobs → Connectors)"
        )
