"""What a running task can know about its job: ``current_job()``.

Async tasks are cancelled for real when their job is cancelled. Sync tasks
can't be interrupted safely, so they are told: long-running sync tasks should
check ``current_job().cancelled`` (or call ``raise_if_cancelled()``) between
steps.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .exceptions import JobCancelled

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .enqueue import JobSpec
    from .models import Job
    from .redaction import Redactor

_current: ContextVar[JobContext | None] = ContextVar("pgjobs_current_job", default=None)


def current_job() -> JobContext | None:
    """The context of the job this code runs in, or None outside a worker."""
    return _current.get()


@dataclass(eq=False)
class JobContext:
    job: Job
    started: float | None = None  # time.monotonic() when the task was called
    #: The thread in the task, for interrupt(): set only once the task is called, as an
    #: exception raised earlier would land in the worker's own code.
    thread_id: int | None = None
    #: The worker's pool thread that took the job, from before its job_started
    #: receivers run: the one to replace if the job is given up on (Worker._give_up_on).
    pool_thread: int | None = None
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Future | None = None
    # A plain flag, not a threading.Event: nobody waits on it, and a worker
    # makes one context per job (an Event costs a Condition and a lock).
    _cancelled: bool = False
    #: The job's connector, loaded when the task starts (see django_pgjobs.connectors).
    connector: Any = None
    #: Masks the secrets of every connector loaded while the job runs, in its
    #: error, its result and the worker's log (see django_pgjobs.redaction).
    redactor: Redactor | None = None
    #: Run in a child process of its own (see django_pgjobs.isolation).
    isolated: bool = False
    #: Failed by the worker at its timeout, its thread given up on: what the thread
    #: returns, if it ever does, is dropped (see Worker._abandon).
    abandoned: bool = False

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled while running."""
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.job.pk} was cancelled")

    def add_secrets(self, values: Iterable[Any]) -> None:
        """Mask these values (a connector's secrets) in what this job leaves behind."""
        if self.redactor is None:
            from .redaction import Redactor

            self.redactor = Redactor()
        self.redactor.add(values)

    def mask(self, text: str) -> str:
        """``text`` with the secrets this job loaded, and any credentials, masked: for
        what leaves the job besides its stored error (a log line, a trace span)."""
        if self.redactor is not None:
            return self.redactor.text(text)
        from .redaction import mask_credentials

        return mask_credentials(text)

    def add_jobs(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Enqueue jobs into this job's pipeline: its dependents wait for them too."""
        from .pipelines import add_to_running_pipeline

        return add_to_running_pipeline(specs)

    def deadline(self) -> float | None:
        if self.started is None or self.job.timeout is None:
            return None
        return self.started + self.job.timeout

    def overdue(self, grace: float = 0.0) -> bool:
        deadline = self.deadline()
        return deadline is not None and time.monotonic() > deadline + grace

    # -- called by the worker, from another thread ------------------------------------

    def request_cancel(self) -> None:
        self._cancelled = True
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)

    def interrupt(self, exception: type[BaseException]) -> bool:
        """Raise ``exception`` in the job's thread at its next Python instruction.

        Best effort: a thread blocked in a C call (sleep, a socket read) sees it
        only when the call returns.
        """
        if self.thread_id is None:
            return False
        hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self.thread_id), ctypes.py_object(exception)
        )
        return hit == 1
