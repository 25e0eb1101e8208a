"""The worker loop: claim due jobs, run them on a thread pool, sleep until woken.

Wake-ups come from NOTIFY (a job was enqueued, a queue changed), from a job
finishing (capacity freed) or from the poll timer, which is the fallback truth
when a notification is lost. ``run_once`` and ``drain`` are the same steps
without the loop, for tests and ``--burst``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from . import conf, db, maintenance, transitions
from .context import JobContext
from .exceptions import JobTimeout
from .execution import execute
from .models import Job, Queue, WorkerProcess
from .notifier import JOBS_CHANNEL, Notifier
from .pool import JobPool
from .queues import check_known, sync_from_settings
from .states import CLAIMABLE
from .tasks import get_task
from .workers import CONTROL_CHANNEL

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Seconds past its timeout after which a sync job that ignored the interrupt is
#: failed by the worker and its thread abandoned.
TIMEOUT_GRACE = 1.0


class Worker:
    def __init__(
        self,
        queues: Iterable[str] | None = None,
        concurrency: int | None = None,
        *,
        poll_interval: float | None = None,
        burst: bool = False,
        clock: Clock = timezone.now,
        states: Iterable[str] | None = None,
    ) -> None:
        self.using = conf.get("DATABASE")
        self.queues = list(queues) if queues else all_queue_names(self.using)
        for name in self.queues:
            check_known(name)
        self.concurrency = concurrency or conf.get("WORKER_CONCURRENCY")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.poll_interval = poll_interval or conf.get("POLL_INTERVAL")
        self.burst = burst
        self.clock = clock
        # Which claimable states to take (POST /jobs/run?status=); all by default.
        self.states = sorted(str(s) for s in (states or CLAIMABLE))
        if not set(self.states) <= set(CLAIMABLE):
            raise ValueError(f"states must be among {sorted(CLAIMABLE)}, not {self.states}")
        self.record: WorkerProcess | None = None
        self.running: dict[int, JobContext] = {}
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.hand_back_now = threading.Event()
        self.stats: Counter[str] = Counter()
        self._pool: JobPool | None = None
        self._notifier: Notifier | None = None
        self._heartbeat: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- one step -----------------------------------------------------------------

    def claim(self, limit: int, now: datetime | None = None) -> list[Job]:
        """Claim up to ``limit`` due jobs across this worker's queues, best first."""
        now = now or self.clock()
        worker_id = self.record.pk if self.record else None
        configs = {
            row["name"]: row
            for row in db.fetch_dicts("queue_configs", {"queues": self.queues}, self.using)
        }
        ordered = sorted(
            self.queues, key=lambda name: -(configs.get(name) or {}).get("priority", 0)
        )
        claimed: list[Job] = []
        for name in ordered:
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            config = configs.get(name) or {}
            if config.get("paused"):
                continue
            params = {
                "queue": name,
                "limit": wanted,
                "now": now,
                "worker_id": worker_id,
                "states": self.states,
            }
            if config.get("blocking") or config.get("concurrency") is not None:
                claimed += self._claim_limited(params)
            else:
                claimed += db.fetch_jobs("claim", params, self.using)
        claimed.sort(key=lambda job: (-job.priority, job.run_at, job.pk))
        return claimed

    def _claim_limited(self, params: dict) -> list[Job]:
        with transaction.atomic(using=self.using):
            locked = db.fetch_dicts("lock_queue", params, self.using)
            if not locked or locked[0]["paused"]:
                return []
            config = locked[0]
            if config["blocking"]:
                return db.fetch_jobs("claim_blocking", params, self.using)
            return db.fetch_jobs(
                "claim_limited", {**params, "concurrency": config["concurrency"]}, self.using
            )

    def run_once(self, now: datetime | None = None) -> list[Job]:
        """Claim what free capacity allows and start it on the pool (inline if no pool)."""
        free = self.concurrency - len(self.running)
        if free <= 0 or self.stopping.is_set():
            return []
        jobs = self.claim(free, now)
        for job in jobs:
            if self._pool is None:
                self._record(execute(job, self.clock))
            else:
                # The pool has a free thread for it, so it starts now; knowing the
                # start here lets the loop wake in time for the job's timeout.
                context = JobContext(job, started=time.monotonic())
                with self._lock:
                    self.running[job.pk] = context
                self._pool.submit(context)
        return jobs

    def drain(self, now: datetime | None = None, max_jobs: int | None = None) -> Counter[str]:
        """Run due jobs inline, one batch after another, until none is due.

        Returns how many jobs ended in each state. ``now`` stands in for the
        clock while draining, so a test can run jobs scheduled in the future and
        see their retries computed from that instant.
        """
        clock = self.clock if now is None else (lambda: now)
        before = Counter(self.stats)
        done = 0
        while max_jobs is None or done < max_jobs:
            batch = self.claim(min(self.concurrency, (max_jobs or 10**9) - done), clock())
            if not batch:
                break
            for job in batch:
                self._record(execute(job, clock))
            done += len(batch)
        return self.stats - before

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.stats[outcome] += 1

    def _execute(self, context: JobContext) -> str:
        return execute(context.job, self.clock, context)

    def _finished(self, context: JobContext, outcome: str) -> None:
        with self._lock:
            self.running.pop(context.job.pk, None)
        self._record(outcome)
        self.wakeup.set()  # capacity is free: claim again

    # -- timeouts and cancellation ---------------------------------------------------

    def enforce_timeouts(self) -> None:
        """Interrupt sync jobs past their timeout; fail the ones that ignore it."""
        for context in self.running_contexts():
            if not context.overdue():
                continue
            if not getattr(context, "interrupted", False):
                context.interrupted = True  # type: ignore[attr-defined]
                context.interrupt(JobTimeout)
            elif context.overdue(grace=TIMEOUT_GRACE):
                self._abandon(context)

    def _abandon(self, context: JobContext) -> None:
        job = context.job
        error = JobTimeout(f"attempt exceeded its timeout of {job.timeout}s")
        logger.warning("job %s ignored its timeout; failing it and abandoning its thread", job.pk)
        try:
            backoff = get_task(job.task).backoff
            transitions.fail(job, error, self.clock(), backoff=backoff)
        except DatabaseError as problem:
            logger.error("could not fail overdue job %s: %s", job.pk, problem)
            return  # try again on the next pass
        with self._lock:
            self.running.pop(job.pk, None)
        self._record("timed out")
        if self._pool is not None and context.thread_id is not None:
            self._pool.replace(context.thread_id)

    def running_contexts(self) -> list[JobContext]:
        """A snapshot: job threads remove their jobs from ``running`` as they finish."""
        with self._lock:
            return list(self.running.values())

    def _next_deadline_in(self) -> float | None:
        deadlines = [c.deadline() for c in self.running_contexts()]
        pending = [d for d in deadlines if d is not None]
        if not pending:
            return None
        return max(0.01, min(pending) - time.monotonic())

    # -- the loop -------------------------------------------------------------------

    def start(self) -> None:
        sync_from_settings(self.using)
        self.record = WorkerProcess.objects.using(self.using).create(
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
        )
        self._pool = JobPool(self.concurrency, self._execute, self._finished)
        self._notifier = Notifier(
            [JOBS_CHANNEL, CONTROL_CHANNEL], self._on_notify, self.wakeup.set, using=self.using
        )
        self._notifier.start()
        self._heartbeat = threading.Thread(target=self._beat, name="pgjobs-heartbeat", daemon=True)
        self._heartbeat.start()
        logger.info(
            "worker %s started: queues=%s concurrency=%s",
            self.record.pk,
            self.queues,
            self.concurrency,
        )

    def run(self) -> None:
        """Start, loop until asked to stop (or idle, with burst), then shut down cleanly."""
        self.start()
        try:
            self._loop()
        finally:
            self.shutdown()

    def _loop(self) -> None:
        retry_delay = 0.1
        while not self.stopping.is_set():
            self.wakeup.clear()
            try:
                self.enforce_timeouts()
                free = self.concurrency - len(self.running)
                claimed = self.run_once()
                retry_delay = 0.1
            except (OperationalError, InterfaceError) as error:
                logger.warning("database unavailable (%s); retrying in %.1fs", error, retry_delay)
                connections[self.using].close()
                self.stopping.wait(retry_delay)
                retry_delay = min(retry_delay * 2, 10.0)
                continue
            if self.burst and not claimed and not self.running:
                break
            if claimed and len(claimed) == free:
                continue  # maybe more is due; claim again as soon as capacity allows
            deadline_in = self._next_deadline_in()
            self.wakeup.wait(min(self.poll_interval, deadline_in or self.poll_interval))

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            if payload in self.queues:
                self.wakeup.set()
            return
        action, _, target = payload.partition(":")
        if action == "stop" and self.record and target in ("all", str(self.record.pk)):
            logger.info("worker %s: stop requested", self.record.pk)
            self.request_stop()
        elif action == "cancel" and target.isdigit():
            context = self.running.get(int(target))
            if context is not None:
                logger.info("job %s cancelled while running", target)
                context.request_cancel()

    def _beat(self) -> None:
        interval = conf.get("HEARTBEAT_INTERVAL")
        rescue_every = conf.get("RESCUE_INTERVAL")
        next_rescue = time.monotonic()
        while not self.stopping.wait(interval):
            try:
                if beat(self.record.pk, self.using):
                    logger.info("worker %s: stop requested", self.record.pk)
                    self.request_stop()
                if time.monotonic() >= next_rescue:
                    maintenance.rescue_orphaned(self.clock())
                    next_rescue = time.monotonic() + rescue_every
            except DatabaseError as error:
                logger.warning("heartbeat failed: %s", error)
                connections[self.using].close()
        connections[self.using].close()

    def request_stop(self) -> None:
        """First call: stop claiming and let running jobs finish. Second: hand them back now."""
        if self.stopping.is_set():
            self.hand_back_now.set()
        self.stopping.set()
        self.wakeup.set()

    def shutdown(self) -> None:
        self.stopping.set()
        deadline = time.monotonic() + conf.get("SHUTDOWN_TIMEOUT")
        while self.running and not self.hand_back_now.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.enforce_timeouts()
            self.hand_back_now.wait(min(remaining, 0.05))
        for context in self.running_contexts():
            job = context.job
            context.request_cancel()  # async tasks stop; sync ones see the flag
            try:
                handed = transitions.hand_back(job)
            except DatabaseError as error:
                # The lease stays valid; rescue of stale workers will return it.
                logger.error("could not hand back job %s: %s", job.pk, error)
                continue
            logger.warning("job %s %s", job.pk, "handed back" if handed else "already moved on")
        if self._notifier:
            self._notifier.stop()
        if self._pool:
            self._pool.shutdown(timeout=1.0)
        if self.record:
            try:
                WorkerProcess.objects.using(self.using).filter(pk=self.record.pk).delete()
            except DatabaseError as error:
                logger.warning("could not remove worker row %s: %s", self.record.pk, error)
        connections[self.using].close()
        logger.info("worker stopped: %s", dict(self.stats))


def beat(worker_id: int, using: str) -> bool:
    """Record a heartbeat; returns whether the worker was asked to stop."""
    rows = WorkerProcess.objects.using(using).filter(pk=worker_id)
    if not rows.update(heartbeat_at=timezone.now()):
        return True  # our row is gone: we were presumed dead and our jobs rescued
    return rows.filter(stop_requested=True).exists()


def all_queue_names(using: str) -> list[str]:
    declared = list(conf.get("QUEUES"))
    stored = Queue.objects.using(using).exclude(name__in=declared).values_list("name", flat=True)
    return declared + sorted(stored)
