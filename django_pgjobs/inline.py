"""Running due jobs here and now, in the calling thread: for hosts without a
long-running worker (a cron that calls ``POST /jobs/run``, a serverless function).

Jobs are claimed one at a time through ``Worker.claim``, the statements every
worker uses, so queue concurrency, pausing and blocking order hold exactly as
they do for workers running beside it. While it runs, the caller is a
registered worker with a heartbeat, so its jobs are not taken for lost, and
a sync task past its timeout is interrupted as in a worker. A job a lost worker
held runs alone in a child process, as in a worker (isolation.py): if it is the
one that kills its process, it kills its child, not the caller.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, connections
from django.db.models.functions import Now
from django.utils import timezone

from . import conf, isolation, limits
from .context import JobContext
from .exceptions import JobTimeout
from .execution import execute
from .models import Job, WorkerProcess
from .worker import Worker, beat

Clock = Callable[[], datetime]


@dataclass
class InlineRun:
    """What one call ran: each job with the state it ended in, and why it stopped."""

    jobs: list[tuple[Job, str]] = field(default_factory=list)
    #: "limit" (ran ``limit`` jobs), "empty" (nothing more due) or "time" (max_seconds).
    stopped: str = "empty"

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, outcome in self.jobs:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def run_due(
    queues: Iterable[str] | None = None,
    *,
    states: Iterable[str] | None = None,
    limit: int = 10,
    max_seconds: float | None = None,
    clock: Clock = timezone.now,
) -> InlineRun:
    """Run up to ``limit`` due jobs of ``queues`` (all when None), one after another.

    No new job starts once ``max_seconds`` have passed; the running one finishes.
    ``InvalidOption``, before anything is written, for a ``limit`` that is no whole
    number from 1, a ``max_seconds`` that is no number of seconds from 0 to a year,
    and ``queues`` or ``states`` given as one string.
    """
    limit = limits.whole_number(limit, "limit", 1, limits.MAX_ID)
    if max_seconds is not None:
        max_seconds = limits.seconds(max_seconds, "max_seconds", zero=True)
    limits.no_string(queues, "queues", "queue names")
    limits.no_string(states, "states", "states")
    worker = Worker(queues, concurrency=1, states=states, clock=clock)
    using = worker.using
    worker.record = WorkerProcess.objects.using(using).create(
        host=conf.host_name(),
        pid=os.getpid(),
        queues=worker.queues,
        concurrency=1,
        started_at=Now(),  # heartbeats go by the database's clock (see worker.beat)
        heartbeat_at=Now(),
    )
    watchdog = _Watchdog(worker.record.pk, using)
    watchdog.start()
    report = InlineRun()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        while True:
            if len(report.jobs) >= limit:
                report.stopped = "limit"
                break
            if deadline is not None and time.monotonic() >= deadline:
                report.stopped = "time"
                break
            claimed = worker.claim(1)
            if not claimed:
                break
            if isolation.wanted(claimed[0]):  # its child is killed at its timeout
                outcome = isolation.execute_alone(claimed[0], clock)
            else:
                context = JobContext(claimed[0])
                watchdog.watch(context)
                outcome = execute(claimed[0], clock, context)
                watchdog.watch(None)
            report.jobs.append((claimed[0], outcome))
    finally:
        watchdog.stop()
        rows = WorkerProcess.objects.using(using).filter(pk=worker.record.pk)
        rows.defer("queues", "failing").delete()  # as the worker's shutdown: not its JSON
    return report


class _Watchdog(threading.Thread):
    """Heartbeats the caller's worker row and interrupts a job past its timeout."""

    def __init__(self, worker_id: int, using: str) -> None:
        super().__init__(name="pgjobs-inline-watchdog", daemon=True)
        self.worker_id = worker_id
        self.using = using
        self.context: JobContext | None = None
        self.stopping = threading.Event()

    def watch(self, context: JobContext | None) -> None:
        self.context = context

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)

    def run(self) -> None:
        interval = conf.get("HEARTBEAT_INTERVAL")
        next_beat = time.monotonic() + interval
        interrupted: JobContext | None = None
        try:
            while not self.stopping.wait(0.05):
                context = self.context
                if context is not None and context is not interrupted and context.overdue():
                    interrupted = context  # once, as the worker does
                    context.interrupt(JobTimeout)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + interval
                    try:
                        # Its heartbeat alone: no skew measured, and no failure it
                        # carries on through (any error ends the call, raised to its
                        # caller), so neither is written (they stay as created: NULL).
                        beat(self.worker_id, self.using)
                    except DatabaseError:
                        connections[self.using].close()
        finally:
            connections[self.using].close()
