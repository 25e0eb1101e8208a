"""Running Django ``@task`` functions on the pgjobs worker, and reporting on them.

A Django Task enqueued through ``PgJobsBackend`` becomes an ordinary Job whose
``task`` is the function's dotted path. Whenever a Django Task of our backend
is created (its module is imported and the decorator runs), the backend
validates it and :func:`register` adds it to the pgjobs task registry under that
path. So the worker finds it the way it finds every task: in the registry,
filled at startup from the ``tasks`` modules of installed apps and
``PGJOBS["TASK_MODULES"]``. A path is never imported because a job names it.

Django's task_finished is relayed from our job_completed/job_discarded
signals, which are connected as soon as a Django Task is registered (always
before one of its jobs can finish in this process).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import exceptions, limits, payload, sending, signals
from .compat import (
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    InvalidTask,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    task_backends,
    task_finished,
    task_started,
)
from .context import current_job
from .limits import shown
from .states import JobState
from .tasks import task as pgjobs_task

if TYPE_CHECKING:
    from .models import Job


#: Dotted path -> the Django Task registered under it (the module-level object).
_django_tasks: dict[str, Task] = {}

# Django's priorities (-100..100) and ours (a smallint) both run higher values
# first, and ours contain Django's, so a Django priority is stored as it is:
# @task(priority=10) and pgjobs' priority=10 mean the same. Reading back, a
# priority an operator set outside Django's range is clamped into it.


def to_pgjobs_priority(priority: int) -> int:
    return int(priority)


def to_django_priority(priority: int) -> int:
    return max(TASK_MIN_PRIORITY, min(TASK_MAX_PRIORITY, priority))


def status_of(state: str) -> TaskResultStatus:
    """Our job state as Django's TaskResultStatus.

    Django has four statuses. Every state in which the job will still run
    (waiting, scheduled, available, and retryable: failed but retrying) is
    READY; cancelled counts as FAILED ("unable to start", in Django's words).
    """
    return {
        JobState.WAITING: TaskResultStatus.READY,
        JobState.SCHEDULED: TaskResultStatus.READY,
        JobState.AVAILABLE: TaskResultStatus.READY,
        JobState.RETRYABLE: TaskResultStatus.READY,
        JobState.EXECUTING: TaskResultStatus.RUNNING,
        JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
        JobState.DISCARDED: TaskResultStatus.FAILED,
        JobState.CANCELLED: TaskResultStatus.FAILED,
    }[JobState(state)]


# -- registering Django Tasks as pgjobs tasks ---------------------------------------------


def register(django_task: Task) -> None:
    """Make ``django_task`` runnable by the worker under its dotted path.

    The first Task seen for a path wins: that is the module-level object the
    decorator made; later ones are ``.using()`` copies of it. Kept only once pgjobs
    has registered it: a path no job can hold (InvalidOption) is refused each time.
    """
    name = django_task.module_path
    if name in _django_tasks:
        return
    pgjobs_task(
        name=name,
        queue=django_task.queue_name,
        priority=to_pgjobs_priority(django_task.priority),
        max_attempts=getattr(django_task, "max_attempts", None),
        timeout=getattr(django_task, "timeout", None),
    )(_runner(django_task))
    _django_tasks[name] = django_task


def django_task_named(name: str) -> Task | None:
    """The Django Task registered under ``name``, or None: a lookup, never an import."""
    return _django_tasks.get(name)


def _runner(django_task: Task) -> Callable[..., Any]:
    """The function the worker calls for jobs of ``django_task``."""
    func = django_task.func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await func(*_started(django_task), *args, **kwargs)

        return _called_as(run_async, django_task)

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        return func(*_started(django_task), *args, **kwargs)

    return _called_as(run, django_task)


def _called_as(runner: Callable[..., Any], django_task: Task) -> Callable[..., Any]:
    """``runner`` with the parameters a job's arguments bind to (binding.py, which reads
    no further than a wrapper's own): the task function's, less the context that a
    ``takes_context`` task gets first."""
    with contextlib.suppress(TypeError, ValueError):  # no signature: none checked
        signature = inspect.signature(django_task.func, follow_wrapped=False)
        rest = list(signature.parameters.values())[1 if django_task.takes_context else 0 :]
        runner.__signature__ = signature.replace(parameters=rest)  # type: ignore[attr-defined]
    return runner


def _started(django_task: Task) -> tuple[Any, ...]:
    """Send Django's task_started; return the arguments that go before the caller's."""
    running = current_job()
    if running is None:
        if django_task.takes_context:
            raise RuntimeError(
                f"{django_task.module_path} takes a context, which only exists on a worker"
            )
        return ()
    backend = task_backends[django_task.backend]
    result = result_from_job(running.job, django_task, backend.alias)
    # Inside the task's call: a receiver's error failed the attempt (sending.py).
    sending.send(task_started, "task_started", running.job, type(backend), task_result=result)
    return (TaskContext(task_result=result),) if django_task.takes_context else ()


# -- jobs as Django TaskResults -------------------------------------------------------------


class PgJobsTaskResult(TaskResult):
    """Django's TaskResult, whose ``return_value`` raises ValueError naming why a job's
    stored result can't be given (a row written by SQL: JSON Python can't read, or a
    value over what is shown) where it gave the stored JSON's text, a str the task
    never returned, or the whole of a 100 MB value."""

    __slots__ = ()

    @property
    def return_value(self) -> Any:
        value = TaskResult.return_value.fget(self)  # type: ignore[attr-defined]
        if isinstance(value, payload.Unreadable):
            raise ValueError(f"job {self.id}'s return value can't be read: {value.problem}")
        return value


def result_from_job(job: Job, django_task: Task, alias: str) -> TaskResult:
    try:
        task = django_task.using(
            queue_name=job.queue, priority=to_django_priority(job.priority), backend=alias
        )
    except InvalidTask:  # moved to a queue the backend doesn't list: keep the task's own
        task = django_task
    status = status_of(job.state)
    result = PgJobsTaskResult(
        task=task,
        id=str(job.pk),
        status=status,
        enqueued_at=job.created_at,
        # pgjobs keeps the start of the latest attempt only.
        started_at=job.attempted_at,
        last_attempted_at=job.attempted_at,
        finished_at=job.finished_at,
        args=_arguments(job.args, list),
        kwargs=_arguments(job.kwargs, dict),
        backend=alias,
        errors=[_task_error(record) for record in _records(job.errors)],
        worker_ids=_worker_ids(job),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", _return_value(job))
    return result


def _arguments(value: Any, kind: type[list] | type[dict]) -> Any:
    """A job's args (``kind`` list) or kwargs (dict) as a TaskResult holds them. A row
    written by SQL may hold any JSON: what is no array (object), or is what enqueue
    refuses (nested past ``payload.MAX_DEPTH``: Django's TaskResult copies them by
    recursion, and 1,100 levels raised RecursionError in get_result and in the worker
    relaying task_finished), or was not read (over ``shown.limit()``), reads as none."""
    return kind(value) if type(value) is kind and payload.is_plain(value) else kind()


def _return_value(job: Job) -> Any:
    """The result of ``job``, or a ``payload.Unreadable`` saying why it can't be given
    (``PgJobsTaskResult.return_value`` raises with it): a value not read, being over
    what is shown (``job.not_shown``), or JSON Python can't read."""
    why = getattr(job, "not_shown", {}).get("result")
    if why is None:
        return job.result
    unread = payload.Unreadable("")
    unread.problem = why
    return unread


def _records(errors: Any) -> list[dict[str, Any]]:
    """A job's error records as objects, however its row holds them (as the admin's
    timeline reads them): a value that is no list is one record, one no object its text."""
    records = errors if isinstance(errors, list) else [errors] if errors else []
    return [r if isinstance(r, dict) else {"error": shown(r, 2_000)} for r in records]


def _task_error(record: dict[str, Any]) -> TaskError:
    traceback = record.get("traceback", "")
    return TaskError(
        exception_class_path=exception_class_path(record),
        traceback=traceback if isinstance(traceback, str) else shown(traceback, 2_000),
    )


def exception_class_path(record: dict[str, Any]) -> str:
    """The dotted path of the exception class of one ``Job.errors`` record."""
    if record.get("exception_class") and isinstance(record["exception_class"], str):
        return record["exception_class"]
    # Records without it (written by rescue.sql, or before it was kept) start
    # with the class name: "ValueError: message", "WorkerLost: worker 7 ...".
    name = str(record.get("error", "")).partition(":")[0]
    for module in (builtins, exceptions):
        if isinstance(getattr(module, name, None), type):
            return f"{module.__name__}.{name}"
    return name


def _worker_ids(job: Job) -> list[str]:
    """One id per attempt, so TaskResult.attempts is right.

    pgjobs keeps which worker process ran the latest attempt only; earlier
    attempts get an empty id, and so do jobs run inline without a worker row.
    At most ``limits.MAX_ATTEMPTS`` (no job can be given more): a row written by
    SQL may count up to 2**31 - 1, and that list was 16 GB.
    """
    attempts = min(job.attempt, limits.MAX_ATTEMPTS)
    if attempts < 1:
        return []
    latest = str(job.worker_id) if job.worker_id is not None else ""
    return [""] * (attempts - 1) + [latest]


# -- relaying our signals to Django's -------------------------------------------------------


def _send_finished(sender: Any, job: Job, **kwargs: Any) -> None:
    django_task = _django_tasks.get(job.task)
    if django_task is None:
        return
    backend = task_backends[django_task.backend]
    result = result_from_job(job, django_task, backend.alias)
    error = kwargs.get("error")
    if not isinstance(error, BaseException):  # completed, or rescued (no error object)
        _relay_finished(backend, job, result)
        return
    # Django's backends send it inside the except block, and its receiver logs the FAILED
    # line with sys.exc_info(): outside one, Django 6's line lacked the traceback (and
    # mail_admins' mail with it), and the backport's logger.exception printed
    # "NoneType: None". The outcome is written already: this raise only sets exc_info,
    # and the error's own traceback is given back as it was.
    traceback = error.__traceback__
    try:
        raise error
    except BaseException:
        _relay_finished(backend, job, result)
    finally:
        error.__traceback__ = traceback


def _relay_finished(backend: Any, job: Job, result: Any) -> None:
    # A failing receiver must not undo an outcome already written (sending.py).
    sending.send(task_finished, "task_finished", job, type(backend), task_result=result)


# Django's "finished" means the TaskResult is final: completed or out of attempts.
# A failed attempt that will be retried leaves the result READY and sends nothing.
signals.job_completed.connect(_send_finished, dispatch_uid="pgjobs.bridge.completed")
signals.job_discarded.connect(_send_finished, dispatch_uid="pgjobs.bridge.discarded")
