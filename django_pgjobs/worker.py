"""The worker loop: claim due jobs, run them on a thread pool, sleep until woken.

Wake-ups come from NOTIFY (a job was enqueued, a queue changed), from a job
finishing (capacity freed) or from the poll timer, which is the fallback truth
when a notification is lost. ``run_once`` and ``drain`` are the same steps
without the loop, for tests and ``--burst``.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections
from django.db.models.functions import Now
from django.utils import timezone

from . import (
    __version__,
    clocks,
    conf,
    db,
    events,
    failing,
    isolation,
    leftovers,
    limits,
    logs,
    lostclaims,
    maintenance,
    middleware,
    outage,
    querylog,
    supervisor,
    transitions,
)
from .claimer import QUEUE_RETRY_MAX, Claimer, all_queue_names
from .completer import Completer
from .context import JobContext
from .exceptions import InvalidOption, JobTimeout
from .execution import execute, failed_attempt, log_abandoned, run
from .models import Job, WorkerProcess
from .notifier import JOBS_CHANNEL, Notifier
from .pool import JobPool
from .queues import check_known, sync_from_settings
from .states import CLAIMABLE, JobState
from .tasks import registered_or_none
from .transitions import Outcome
from .workers import CONTROL_CHANNEL

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Seconds past its timeout after which a sync job that ignored the interrupt is
#: failed by the worker and its thread abandoned.
TIMEOUT_GRACE = 1.0

#: Most seconds between two attempts to write the failure of a job that ignored its
#: timeout, while the write fails (the database away, say): the second comes 0.1 s
#: after the first, each later one twice as long after the one before.
ABANDON_RETRY_MAX = 5.0

#: The value of WORKER_PREFETCH (and --prefetch) that adapts the prefetch to the load.
AUTO = "auto"
#: Most jobs auto prefetch claims beyond the free threads, per thread.
AUTO_PREFETCH_PER_THREAD = 10
#: Seconds within which the threads must be able to start every job auto prefetch
#: claims ahead, at the jobs' recent run time: jobs over concurrency x 50 ms are not
#: prefetched (1-s jobs below 20 threads), 10-ms ones 5 per thread, no-ops up to
#: AUTO_PREFETCH_PER_THREAD (more did no better in W4, and would be more jobs held
#: behind a job that turns out long).
AUTO_PREFETCH_HORIZON = 0.05

#: Seconds a started worker waits for its own probe notification before it warns
#: that LISTEN hears nothing.
LISTEN_PROBE_TIMEOUT = 5.0


#: What put a claim in doubt when its connection broke (see Worker._doubt).
LOST_CONNECTION = "the connection broke"

#: Seconds between the loop's hand-backs while the backend of a connection it lost
#: may still commit a claim (it could not be ended: behind a pooler, say).
LOST_CLAIM_RETRY = 1.0

#: Most seconds between two passes of the loop while they fail (its connection lost,
#: or an error no lost connection explains): 0.1 s after the first failure, then
#: twice as long each time.
LOOP_RETRY_MAX = 10.0

#: What a job thread or the completer says of a job whose outcome it didn't write.
UNRECORDED = frozenset({"crashed", "unrecorded"})

#: Least seconds a stopping worker waits for the outcomes of the jobs that finished to
#: be written (and its kept ones tried a last time) once the running jobs were waited
#: for: up to SHUTDOWN_TIMEOUT from the stop, or this long if that is sooner (or a
#: second signal asked to hand back now).
LAST_WRITES_MIN = 1.0

#: Most seconds a stopping worker waits for its job threads to end, all of them
#: together, before it hands back the jobs still running (a sync task can't be
#: stopped from outside: it ends with the process, a moment after).
POOL_STOP_WAIT = 1.0


class Worker:
    def __init__(
        self,
        queues: Iterable[str] | None = None,
        concurrency: int | None = None,
        *,
        poll_interval: float | None = None,
        prefetch: int | None = None,
        burst: bool = False,
        clock: Clock = timezone.now,
        states: Iterable[str] | None = None,
        on_stale: Callable[[object, float, float], None] | None = None,
    ) -> None:
        self.using = conf.get("DATABASE")
        # Without queues: every queue, the list read again as queues are added (by
        # the claimer: ``Claimer._refresh_queue_names``).
        every_queue = not queues
        queue_names = list(queues) if queues else all_queue_names(self.using)
        for name in queue_names:
            check_known(name)
        # None means the setting. Anything else is checked (InvalidOption, a
        # ValueError): 0 silently meant the setting, 10**8 built that many threads
        # before the first claim, and a poll interval of -1 or NaN polled without
        # pause.
        self.concurrency = (
            conf.get("WORKER_CONCURRENCY")
            if concurrency is None
            else limits.whole_number(concurrency, "concurrency", 1, limits.MAX_CONCURRENCY)
        )
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        # Claimed jobs beyond the free threads wait in the pool's inbox, already
        # executing in the database: claims come in bigger batches (see run_once).
        # "auto" (the default) adapts it: see _adapt_prefetch.
        # Bounded like the concurrency: 10**9 claimed the whole queue into memory.
        wanted = conf.get("WORKER_PREFETCH") if prefetch is None else prefetch
        self.auto_prefetch = check_prefetch(wanted) == AUTO
        self.prefetch = 0 if self.auto_prefetch else wanted
        # Seconds the recent jobs took to run (a moving average), for auto prefetch,
        # and whether one was snoozed (a limit said "not now") since the last claim.
        self._run_seconds: float | None = None
        self._snoozed = False
        # time.monotonic() when each job now on a thread started (auto prefetch): a
        # job running long stops the prefetch before its run time is known.
        self._started: dict[int, float] = {}
        self.poll_interval = (
            conf.get("POLL_INTERVAL")
            if poll_interval is None
            else limits.seconds(poll_interval, "poll_interval")
        )
        self.burst = burst
        self.clock = clock
        #: The database's clock as seen from here: heartbeats and rescue go by it,
        #: and its skew, measured at each heartbeat, is shown in the admin. Claims
        #: go by ``clock``, the one enqueuers set run_at with (see docs/scheduling.md).
        self.database_clock = clocks.DatabaseClock(self.using)
        # Which claimable states to take (POST /jobs/run?status=); all by default.
        self.states = sorted(str(s) for s in (states or CLAIMABLE))
        if not set(self.states) <= set(CLAIMABLE):
            raise ValueError(f"states must be among {sorted(CLAIMABLE)}, not {self.states}")
        # Claims the jobs of its queues and keeps what the claims go by: their list,
        # their settings, the ones whose claim failed, a rate limit's room.
        self._claimer = Claimer(
            self.using,
            queue_names,
            every_queue,
            states=self.states,
            poll_interval=self.poll_interval,
            capacity=self._capacity,
            in_doubt=self._queue_in_doubt,
        )
        self.record = None
        # Called (worker id, seconds silent, limit) when no heartbeat could be written
        # for WORKER_STALE_AFTER: runworker ends the process (liveness.exit_stale).
        self.on_stale = on_stale
        self._gone = threading.Event()  # set once shutdown is over
        # (payload, heard): the probe that tells whether LISTEN hears anything.
        self._probe: tuple[str, threading.Event] | None = None
        #: time.monotonic() of the last heartbeat written (or of the start): for probes.
        self.heartbeat_ok_at: float | None = None
        self.running: dict[int, JobContext] = {}
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.hand_back_now = threading.Event()
        self.stats: Counter[str] = Counter()
        self._pool: JobPool | None = None
        self._notifier: Notifier | None = None
        self._heartbeat: threading.Thread | None = None
        self._lock = threading.Lock()
        # Writes the outcomes of the jobs that ran on the pool (its thread starts with
        # the worker), then frees their slots (_finished).
        self._completer = Completer(self._finished, self._wake_when_due, self._completer_failed)
        #: What runworker exits with once the worker stopped: 1 after its completer
        #: thread failed (a supervisor restarts it), else 0.
        self.exit_code = 0
        self._publisher: events.Publisher | None = None
        # Jobs in ``running`` whose task returned and whose outcome awaits the
        # completer: they hold no thread, so their slots can take new jobs (up to
        # a bound: see _free).
        self._returned: set[int] = set()
        # True while a claim's jobs are on their way into ``running``: the
        # heartbeat then can't tell a forgotten job from a just-claimed one.
        self._claiming = False
        # True once a pass of the loop lost its connection: a claim may have committed
        # without its answer (see _hand_back_unheld); or once a claim, or a pass in or
        # after its claim, failed otherwise.
        self._claim_in_doubt = False
        # What put the claim in doubt (see _doubt), for the hand-back to say: the
        # connection lost (LOST_CONNECTION) or a failure, in words; in order, once each.
        self._doubts: dict[str, None] = {}
        # A hand-back that failed with an error no lost connection explains (a site's
        # trigger refusing it, a statement timeout): said once while it repeats, tried
        # again after a backoff while the loop's claims go on (see _try_hand_back).
        self._handing_back: logs.LoopStep | None = None
        self._hand_back = outage.Doubling(QUEUE_RETRY_MAX)
        # The loop's connection (the psycopg one) and the backend serving it, learnt
        # once per connection: the one to end if the connection is lost (lostclaims).
        self._backend: tuple[object, lostclaims.Backend | None] | None = None
        # Backends of connections the loop lost that may still commit a claim, each
        # with the time.monotonic() after which it is given up on; and when the loop
        # tries them again (LOST_CLAIM_RETRY).
        self._lost: list[tuple[lostclaims.Backend | None, float]] = []
        self._retry_lost_at: float | None = None
        # Jobs that left ``running`` with their outcome unwritten (the pool or the
        # completer gave up on it: "crashed", "unrecorded"): they ran, and stay
        # executing under our lease for reclaim_forgotten, which counts the attempt.
        # _hand_back_unheld must not take them for a lost claim's and give them back
        # uncounted. Forgotten when claimed again.
        self._unrecorded: set[int] = set()
        # Claimed jobs submitted to the pool that no thread has started yet.
        self._queued = 0
        # time.monotonic() of each retry or snooze this worker wrote that is due
        # before its next poll, soonest first (a heap): a retry 1 s after a failure
        # runs then, not at the poll after it (see _wake_when_due).
        self._retries_at: list[float] = []
        # Running jobs with a timeout whose task has not returned: the only ones
        # the loop must watch (scanning every running job on every wake-up made
        # the loop quadratic in the concurrency).
        self._timed: dict[int, JobContext] = {}
        # Jobs that ignored their timeout and whose failure could not be written yet,
        # by id: retried with a backoff, not on every pass (see _abandon_failed). The
        # loop's thread only.
        self._unwritten: dict[int, _Unwritten] = {}
        # While the loop's passes keep failing (any error: a lost connection too): the
        # time.monotonic() of the first failure since the last pass that went through,
        # the failures since, and the last error's class. For the readiness probe
        # (``failing``); written by the loop's thread, as one tuple.
        self._loop_failing: tuple[float, int, str] | None = None

    @property
    def record(self) -> WorkerProcess | None:
        """Its row, once registered (by ``start``, or by ``inline.run_due``): its claims
        are made under its id."""
        return self._row

    @record.setter
    def record(self, record: WorkerProcess | None) -> None:
        self._row = record
        self._claimer.worker_id = None if record is None else record.pk

    @property
    def queues(self) -> list[str]:
        """The queues it claims (a worker of every queue reads their list again as
        queues are added: ``Claimer._refresh_queue_names``)."""
        return self._claimer.queues

    @property
    def every_queue(self) -> bool:
        """Whether it was given no queues: it claims every queue."""
        return self._claimer.every_queue

    # -- one step -----------------------------------------------------------------

    def claim(self, limit: int, now: datetime | None = None, *, publish: bool = True) -> list[Job]:
        """Claim up to ``limit`` due jobs across this worker's queues, best first.

        The claim statements leave publishing their events to the caller:
        ``publish=False`` lets the loop start the jobs first (``publish_claimed``).

        In a started worker, a queue whose claim fails with an error no lost
        connection explains is skipped and the others are claimed all the same
        (``Claimer.claim``). A lost connection still fails the whole claim, for the
        loop to handle; so does any error without a pool (``drain``, ``run_once`` in
        tests: the caller sees it).
        """
        claimed = self._claimer.claim(limit, now or self.clock())
        if publish:
            self.publish_claimed(claimed)
        return claimed

    def failing(self, longer_than: float) -> list[tuple[str | None, float, int, str]]:
        """What has kept failing for more than ``longer_than`` seconds, for the
        readiness probe (``probes.failing``): (queue name, or None for the loop's
        passes; time.monotonic() of the first failure; failures since; the last
        error's class). Called from another thread: it reads what the loop's thread
        writes, and changes nothing."""
        now = time.monotonic()
        found: list[tuple[str | None, float, int, str]] = []
        loop = self._loop_failing
        if loop is not None and now - loop[0] > longer_than:
            found.append((None, *loop))
        return found + self._claimer.failing(longer_than)

    def _loop_failed(self, error: BaseException) -> None:
        """Count a failed pass of the loop for ``failing``."""
        last = self._loop_failing
        since, failures = (last[0], last[1] + 1) if last else (time.monotonic(), 1)
        self._loop_failing = (since, failures, type(error).__name__)

    def _on_reconnect(self) -> None:
        self._claimer.forget_queue_configs()
        outage.retry_now(self.using)  # LISTEN got through: so will the claims, likely
        self.wakeup.set()

    def publish_claimed(self, jobs: list[Job]) -> None:
        changes = [(job, job.previous) for job in jobs]
        if self._publisher is not None:
            self._publisher.publish(changes)
        elif self._pool is None:  # inline (drain, tests): at once
            events.publish(changes, self.using)
        # else: a started worker without a publisher has EVENTS off

    def run_once(self, now: datetime | None = None) -> list[Job]:
        """Claim what free capacity allows and start it on the pool (inline if no pool).

        With a prefetch, it claims only once the jobs waiting for a thread run
        out or half the capacity is free: one claim of many jobs rather than a
        claim each time a job ends.
        """
        now = limits.given_now(now)
        free = self.free_slots()
        if self.stopping.is_set():
            return []
        if not self._worth_a_claim(free):
            if self._claimer.refused and self._pool is not None:
                self._claimer.try_refused(now or self.clock())
            return []
        with self._lock:
            self._claiming = True
        try:
            jobs = self.claim(free, now, publish=self._pool is None)
            self._start_claimed(jobs)
        finally:
            with self._lock:
                self._claiming = False
        if self.auto_prefetch:
            self._adapt_prefetch(asked=free, got=len(jobs))
        return jobs

    def _adapt_prefetch(self, asked: int, got: int) -> None:
        """Auto prefetch: claim ahead what the threads can start within the horizon.

        The target is what ``concurrency`` threads get through in AUTO_PREFETCH_HORIZON
        seconds at the jobs' recent run time (or the run time of a job still running, if
        longer), at most AUTO_PREFETCH_PER_THREAD per thread: no-op jobs get the most,
        1-s jobs none (they would wait behind each other while another worker idles).
        A claim that comes back full (more is due than the worker holds room for)
        raises the prefetch to the target; it drops to the target at once when jobs
        get longer. It no longer halves when a claim comes back short: at a steady
        2,000 jobs/s every claim takes what is due and comes back short, so the
        prefetch collapsed and each hiccup became a backlog drained 10 jobs a claim
        (bare runworker p99 50-250 ms at load 5-13; with a steady prefetch, 25-30 ms).
        Nothing is claimed ahead while jobs are being snoozed by a limit.
        """
        snoozed, self._snoozed = self._snoozed, False
        if snoozed:
            # A job waited for a limit (a connector's slots or rate, a Snooze): jobs
            # claimed ahead would only wait too, so claim no more than threads take.
            self.prefetch = 0
            return
        target = self._prefetch_target()
        if target < self.prefetch or (asked and got >= asked):
            self.prefetch = target

    def _prefetch_target(self) -> int:
        """What auto prefetch claims ahead at most, by how long jobs take (see above)."""
        seconds = self._run_seconds
        if seconds is None:
            return 0  # nothing known of the jobs' length yet
        with self._lock:
            oldest = min(self._started.values(), default=None)
        if oldest is not None and (running := time.monotonic() - oldest) > AUTO_PREFETCH_HORIZON:
            # A job on a thread for longer than the horizon: the average of the last
            # jobs doesn't know yet that they got long. (Shorter: scheduling noise.)
            seconds = max(seconds, running)
        most = self.concurrency * AUTO_PREFETCH_PER_THREAD
        if seconds <= 0:
            return most
        return min(most, int(self.concurrency * AUTO_PREFETCH_HORIZON / seconds))

    def _start_claimed(self, jobs: list[Job]) -> None:
        if self._pool is not None:
            # Queued before the jobs start, so they precede the jobs' outcome events.
            self.publish_claimed(jobs)
        for job in jobs:
            if self._pool is None:
                self._record(self._execute(job, self.clock))
            else:
                # It starts when a thread takes it (at once, unless prefetched).
                context = JobContext(job, isolated=isolation.wanted(job))
                with self._lock:
                    self.running[job.id] = context
                    self._unrecorded.discard(job.id)
                    self._queued += 1
                    # An isolated job's thread enforces its timeout itself.
                    if job.timeout is not None and not context.isolated:
                        self._timed[job.id] = context
                self._pool.submit(context)

    def drain(self, now: datetime | None = None, max_jobs: int | None = None) -> Counter[str]:
        """Run due jobs inline, one batch after another, until none is due.

        Returns how many jobs ended in each state. ``now`` stands in for the
        clock while draining, so a test can run jobs scheduled in the future and
        see their retries computed from that instant.
        """
        now = limits.given_now(now)
        if max_jobs is not None:
            limits.whole_number(max_jobs, "max_jobs", 0, limits.MAX_ID)
        clock = self.clock if now is None else (lambda: now)
        limits.given_now(clock(), "the clock's now")  # a frozen one, near 9999, too
        before = Counter(self.stats)
        done = 0
        while max_jobs is None or done < max_jobs:
            batch = self.claim(min(self.concurrency, (max_jobs or 10**9) - done), clock())
            if not batch:
                break
            for job in batch:
                self._record(self._execute(job, clock))
            done += len(batch)
        return self.stats - before

    def _execute(self, job: Job, clock: Callable[[], datetime]) -> str:
        """Run a claimed job inline (no pool) and write its outcome."""
        if isolation.wanted(job):
            return isolation.execute_alone(job, clock)
        return execute(job, clock)

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.stats[outcome] += 1

    def _run(self, context: JobContext) -> Outcome | str:
        context.pool_thread = threading.get_ident()
        querylog.forget()  # the task sees its own queries only, as a view does
        with self._lock:
            self._queued -= 1
            if self.prefetch and not self._queued:
                self.wakeup.set()  # the last prefetched job started: claim more
            # Cancelled while it waited for a thread (by an operator, or by shutdown,
            # which then hands it back itself): don't start it.
            if context.cancelled:
                return "lost"
            # A prefetched job that never started: give it back. (Without prefetch a
            # job is claimed for a free thread and starts at once: it runs, and
            # shutdown waits for it as before.) Marked under the lock, so that
            # shutdown doesn't hand it back a second time.
            # (Under auto prefetch, by what it is now: at 0, nothing was claimed ahead.)
            give_back = self.prefetch > 0 and self.stopping.is_set()
            if give_back:
                context.request_cancel()
        if give_back:
            return "handed back" if transitions.hand_back(context.job) else "lost"
        if context.isolated:  # a worker was lost while holding it: run it alone
            return isolation.run_alone(context, self.clock)
        leftovers.drop_ended()  # idle since the thread's last job: maybe ended meanwhile
        started = time.monotonic()
        if self.auto_prefetch:
            with self._lock:
                self._started[context.job.id] = started
        if context.job.timeout is not None:
            # Known before the task is called, so the loop wakes in time for its timeout.
            context.started = started
            self.wakeup.set()
        try:
            outcome = run(context.job, self.clock, context)
        finally:
            if self.auto_prefetch:
                with self._lock:
                    self._started.pop(context.job.id, None)
        if outcome == JobState.SCHEDULED and context.job.run_at is not None:  # snoozed
            self._wake_when_due([(context.job.run_at - self.clock()).total_seconds()])
        if self.auto_prefetch:
            if outcome == JobState.SCHEDULED:  # snoozed: see _adapt_prefetch
                self._snoozed = True
            took = time.monotonic() - started
            last = self._run_seconds
            # A moving average of about the last 20 jobs; a race between threads here
            # loses an update at worst.
            self._run_seconds = took if last is None else last + (took - last) / 20
        return outcome

    def _capacity(self) -> int:
        """Most jobs it holds: its threads and its prefetch (as it is now, if auto)."""
        return self.concurrency + self.prefetch

    def free_slots(self) -> int:
        """Jobs this worker can claim now: its threads and prefetch, less the jobs it
        holds. A job whose outcome is being written still counts as running
        (shutdown and cancellation see it), but it no longer needs its thread, so
        claiming overlaps with writing."""
        with self._lock:
            return self._free()

    def _free(self) -> int:
        """``free_slots``, for a caller that holds ``_lock``.

        Jobs whose outcome awaits the completer free their slot, but no more of
        them than the worker's capacity: while outcomes can't be written (the
        database is away) the worker stops claiming instead of piling up jobs
        it can't finish. It holds at most twice its capacity."""
        capacity = self.concurrency + self.prefetch
        return capacity - (len(self.running) - min(len(self._returned), capacity))

    def _worth_a_claim(self, free: int) -> bool:
        """Whether ``free`` slots are worth a claim now. With a prefetch, only once the
        jobs waiting for a thread run out or half the capacity is free: one claim of
        many jobs rather than a claim each time a job ends."""
        if free <= 0:
            return False
        return not (
            self.prefetch and self._queued and free < (self.concurrency + self.prefetch) // 2
        )

    def _ran(self, context: JobContext, outcome: Outcome | str) -> None:
        """A pool thread is done with a job: queue its outcome for the completer.
        Unless the worker gave up on it at its timeout: that failure was written and
        counted instead (see _abandon)."""
        with self._lock:
            abandoned = context.abandoned
            if not abandoned:
                self._returned.add(context.job.id)
                _forget(self._timed, context)
            # Its thread is free. The loop is woken only if that makes a claim worth
            # it: woken after every job, it went round for nothing most of the time.
            wake = self._worth_a_claim(self._free())
        if abandoned:
            logger.info("job %s: its abandoned thread came back; nothing written", context.job.pk)
        else:
            self._completer.outcomes.put((context, outcome))
        if wake:
            self.wakeup.set()

    def _wake_when_due(self, delays: list[float]) -> None:
        """Wake the loop when each of these jobs it put back (a retry, a snooze) is
        due, ``delays`` seconds from now, if that is before the next poll. Nobody
        notifies a job that becomes due (only new and made-available ones are), so a
        retry 1 s after a failure otherwise waited for the poll (POLL_INTERVAL)."""
        soon = sorted(d for d in delays if d < self.poll_interval)
        if not soon:
            return
        now = time.monotonic()
        with self._lock:
            # A few ms late rather than early: a claim a hair before run_at finds
            # nothing. Jobs due within 10 ms of each other share one wake-up.
            for delay in soon:
                at = now + max(0.0, delay) + 0.005
                if not self._retries_at or abs(at - max(self._retries_at)) > 0.01:
                    heapq.heappush(self._retries_at, at)

    def _finished(self, ended: list[tuple[JobContext, str]]) -> None:
        """Free the slots of jobs whose outcome is written (or given up on): the
        completer's, from its thread."""
        with self._lock:
            for context, outcome in ended:
                _forget(self.running, context)
                if outcome in UNRECORDED:
                    self._unrecorded.add(context.job.id)
                self._returned.discard(context.job.id)
                _forget(self._timed, context)
                self.stats[outcome] += 1
            wake = self._worth_a_claim(self._free())
        if wake:
            self.wakeup.set()

    # -- timeouts and cancellation ---------------------------------------------------

    def enforce_timeouts(self) -> None:
        """Interrupt sync jobs past their timeout; fail the ones that ignore it."""
        with self._lock:
            timed = list(self._timed.values())
        now = time.monotonic()
        for context in timed:
            due = self._due_at(context)
            if due is None or now <= due:
                continue
            if not getattr(context, "interrupted", False):
                context.interrupted = True  # type: ignore[attr-defined]
                context.interrupt(JobTimeout)
            else:
                self._abandon(context)

    def _due_at(self, context: JobContext) -> float | None:
        """When (``time.monotonic()``) the loop next has something to do about a timed
        job: interrupt it at its timeout, fail it past the grace after, or try again to
        write that failure. Not the timeout alone: once it was past, the loop woke every
        10 ms until the job was done with."""
        deadline = context.deadline()
        if deadline is None:
            return None
        unwritten = self._unwritten.get(context.job.id)
        if unwritten is not None:
            return unwritten.retry_at
        if getattr(context, "interrupted", False):
            return deadline + TIMEOUT_GRACE
        return deadline

    def _abandon(self, context: JobContext) -> None:
        """Fail a job whose thread ignored its timeout, counted once as what was written."""
        if not self._give_up_on(context):
            return  # its thread came back first: the completer writes its outcome
        job = context.job
        error = JobTimeout.exceeded(job.timeout)
        unwritten = self._unwritten.get(job.pk)
        if unwritten is None:  # said once, not again at each retry of the write
            logger.warning(
                "job %s (%s) ignored its timeout; failing it and abandoning its thread",
                job.pk,
                logs.printable(job.task),
                extra=logs.job_fields(job),
            )
        try:
            # Its task may be unknown here: held in a job_started receiver, sent before
            # the lookup (UnknownTask ended the loop).
            outcome = failed_attempt(job, error, self.clock(), registered_or_none(job.task))
            [written] = transitions.finish([outcome])
        except Exception as problem:  # a bug of ours too: it stopped the worker's loop
            self._abandon_failed(context, problem)
            return
        if unwritten is not None:
            del self._unwritten[job.pk]
            logger.warning(
                "job %s: its failure at its timeout written after %.1fs (%d failed attempt(s))",
                job.pk,
                time.monotonic() - unwritten.since,
                unwritten.attempts,
            )
        if written:  # retried when, or discarded: as for a failure of the task's own
            log_abandoned(outcome, error)
        with self._lock:
            _forget(self.running, context)
        # Not written: its lease was taken away (cancelled, deleted, rescued) first.
        self._record(outcome.state if written else "lost")

    def _abandon_failed(self, context: JobContext, problem: Exception) -> None:
        """Writing the failure of a job that ignored its timeout failed: try again
        after a backoff, as long as it takes (the job stays executing under our lease
        meanwhile). Said once per job, and again every REMIND_EVERY seconds while it
        lasts: retried on every pass of the loop, it used to say so each time. An
        error that is no database's (a bug of ours) is said with its type and, the
        first time, its traceback; the loop carries on as after a database error."""
        job = context.job
        ours = not isinstance(problem, DatabaseError)
        if isinstance(problem, db.CONNECTION_TROUBLE):
            # Else every retry meets the same lost connection (Django reconnects only a
            # closed one), and nothing else of the loop's closes it while its slots are
            # full: the write failed on after the database was back.
            connections[self.using].close()
        now = time.monotonic()
        unwritten = self._unwritten.get(job.pk)
        if unwritten is None:
            unwritten = self._unwritten[job.pk] = _Unwritten(since=now)
        unwritten.retry_at = now + unwritten.backoff.failed()
        why = transitions.error_line(problem) if ours else outage.describe(problem)
        if unwritten.said_at is None:
            logger.error(
                "could not fail overdue job %s: %s; retrying until it is written",
                job.pk,
                why,
                exc_info=problem if ours else None,
            )
            unwritten.said_at = now
        elif now - unwritten.said_at >= outage.REMIND_EVERY:
            logger.error(
                "could not fail overdue job %s for %.0fs now: %s",
                job.pk,
                now - unwritten.since,
                why,
            )
            unwritten.said_at = now
        with self._lock:
            self._timed[job.pk] = context

    def _give_up_on(self, context: JobContext) -> bool:
        """Take a timed-out job from its thread: what the thread returns from now on is
        dropped (_ran), and a new thread takes its place in the pool. False if the
        thread came back first (it left ``_timed`` then)."""
        with self._lock:
            if self._timed.get(context.job.id) is not context:
                return False
            del self._timed[context.job.id]
            first, context.abandoned = not context.abandoned, True
        # Replaced even before its task is called (held in a job_started receiver,
        # say; call_task then sees ``abandoned`` and doesn't call it): the held thread
        # kept its slot, and the job claimed into the slot freed waited for it.
        if first and self._pool is not None and context.pool_thread is not None:
            self._pool.replace(context.pool_thread)
        return True

    def _not_returned(self) -> int:
        """How many running jobs' tasks haven't returned (or not yet started)."""
        with self._lock:
            return len(self.running) - len(self._returned)

    def running_contexts(self) -> list[JobContext]:
        """A snapshot: job threads remove their jobs from ``running`` as they finish."""
        with self._lock:
            return list(self.running.values())

    def _next_deadline_in(self, claimed_at: float) -> float | None:
        """Seconds until the loop must claim or check again before its next poll: a
        timeout, a rate limit's room, a retry due (None: none before the poll).
        ``claimed_at``: when this pass's claim began (a retry due before it was taken
        by it, or by another worker)."""
        with self._lock:
            timed = list(self._timed.values())
            while self._retries_at and self._retries_at[0] <= claimed_at:
                heapq.heappop(self._retries_at)
            retry_at = self._retries_at[0] if self._retries_at else None
        pending = [d for d in (self._due_at(c) for c in timed) if d is not None]
        pending += [at for at in (retry_at, self._retry_lost_at) if at is not None]
        # A rate limit's room, a refused queue's retry: only those still ahead.
        pending += self._claimer.due_ahead(time.monotonic())
        if not pending:
            return None
        return max(0.01, min(pending) - time.monotonic())

    # -- the loop -------------------------------------------------------------------

    def start(self) -> None:
        middleware.chain()  # a bad entry fails here, not job by job
        sync_from_settings(self.using)
        self.record = WorkerProcess.objects.using(self.using).create(
            host=conf.host_name(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            started_at=Now(),
            heartbeat_at=Now(),
        )
        self.heartbeat_ok_at = time.monotonic()
        supervisor.announce(f"worker:{self.record.pk}")  # if it runs under --processes
        if conf.get("EVENTS"):
            self._publisher = events.Publisher(self.using)
            self._publisher.start()
        self._completer.start(self._publisher)
        self._pool = JobPool(self.concurrency, self._run, self._ran)
        self._notifier = Notifier(
            [JOBS_CHANNEL, CONTROL_CHANNEL],
            self._on_notify,
            self._on_reconnect,
            using=conf.get("LISTEN_DATABASE") or self.using,
            check_every=conf.get("HEARTBEAT_INTERVAL"),
        )
        self._claimer.start(self._notifier)  # each queue's claim fails alone from now on
        self._notifier.start()
        self._heartbeat = threading.Thread(target=self._beat, name="pgjobs-heartbeat", daemon=True)
        self._heartbeat.start()
        if self.on_stale is not None:
            threading.Thread(target=self._watch, name="pgjobs-watchdog", daemon=True).start()
        threading.Thread(target=self._check_listen, name="pgjobs-listen-check", daemon=True).start()
        logs.process_fields["worker_id"] = self.record.pk
        logger.info(
            "django-pgjobs %s worker %s started: database %s, queues %s, "
            "concurrency %s, prefetch %s, pid %s",
            __version__,
            self.record.pk,
            logs.database(self.using),
            ", ".join(self.queues),
            self.concurrency,
            AUTO if self.auto_prefetch else self.prefetch,
            os.getpid(),
        )

    def run(self) -> None:
        """Start, loop until asked to stop (or idle, with burst), then shut down cleanly."""
        self.start()
        try:
            with _fewer_collections():
                self._loop()
        finally:
            self.shutdown()

    def _loop(self) -> None:
        db.prepare_on_this_thread()
        # After a lost connection: the wait before reconnecting (cut short, see below).
        reconnecting = outage.Doubling(LOOP_RETRY_MAX)
        # After an error no lost connection explains (see below): seconds to the next pass.
        erring = outage.Doubling(LOOP_RETRY_MAX)
        passing = logs.LoopStep(
            logger, f"worker {self.record.pk if self.record else '-'}: a pass of its loop"
        )
        while not self.stopping.is_set():
            self.wakeup.clear()
            querylog.forget()
            seen = outage.generation(self.using)
            claiming = False
            try:
                self._know_backend()
                if self._claim_in_doubt and time.monotonic() >= (self._retry_lost_at or 0):
                    self._try_hand_back()
                self.enforce_timeouts()
                free = self.free_slots()
                # Read before claiming: a job whose outcome is being written still
                # blocks its queue (blocking, limited) for this claim even if it is
                # gone from ``running`` by the time the claim returns.
                was_idle = not self.running
                claimed_at = time.monotonic()
                claiming = True
                claimed = self.run_once()
                if reconnecting.failures:  # back after a failure, on a new connection
                    outage.reachable(self.using, claimed_at)
                reconnecting.reset()
                erring.reset()
                passing.passed()
                self._loop_failing = None
            except db.CONNECTION_TROUBLE as error:
                if not db.connection_trouble(error):
                    # A statement timeout, a lock timeout, a deadlock (by its SQLSTATE):
                    # an OperationalError, yet the session lives. As below.
                    self._failed_pass(passing, error, claiming, erring.failed())
                    continue
                self._loop_failed(error)
                self._lost_connection()
                outage.unreachable(self.using, error)
                connections[self.using].close()
                # Cut short once another connection (the LISTEN one, at most a second
                # apart) got through: not at the end of a backoff of up to 10 s.
                outage.pause(
                    self.using,
                    outage.spread(reconnecting.failed()),
                    self.stopping,
                    since=seen,
                )
                continue
            except Exception as error:
                # No lost connection: a statement the server refused (a site's trigger
                # on a row it claims, a constraint), or a bug of ours meeting an odd
                # row. It ended the loop, and the worker with it, while its heartbeat
                # went on. Said once while it repeats (at DEBUG after that, again in
                # full once it changes or a pass went through), backed off from, cut
                # short by a stop; the jobs running meanwhile finish and are written.
                self._failed_pass(passing, error, claiming, erring.failed())
                continue
            if self.burst and not claimed and was_idle:
                break
            if claimed and len(claimed) == free:
                continue  # maybe more is due; claim again as soon as capacity allows
            deadline_in = self._next_deadline_in(claimed_at)
            self.wakeup.wait(min(self.poll_interval, deadline_in or self.poll_interval))

    def _failed_pass(
        self, passing: logs.LoopStep, error: Exception, claiming: bool, delay: float
    ) -> None:
        """A pass of the loop failed with ``error``, which no lost connection explains:
        say it (once while it repeats), start the next pass clean, back off ``delay``
        seconds (drawn), cut short by a stop."""
        passing.failed(error)
        self._loop_failed(error)
        self._after_failed_pass(claiming, error)
        self.stopping.wait(outage.spread(delay))

    def _after_failed_pass(self, claiming: bool, error: BaseException | None = None) -> None:
        """Start the next pass clean after one failed with an error no lost connection
        explains: on a new connection (nothing of the failed pass's transaction or
        session left behind), and, if it failed in or after its claim, with that claim
        in doubt: it may have committed jobs it never started (a failure while it
        built or started them), which ``_hand_back_unheld`` gives back, uncounted,
        before the next claim (a claim the server refused committed nothing: it then
        finds none)."""
        if claiming:
            why = _error_words(error) if error is not None else "failed"
            self._doubt(f"a pass of its loop: {why}")
        self._backend = None  # the connection closed below ran no claim still under way
        with contextlib.suppress(Exception):  # closing a broken one may raise too
            connections[self.using].close()

    def _know_backend(self) -> None:
        """Learn which backend serves the loop's connection, once per connection (made
        here if need be): the one to end should it be lost (``_lost_connection``)."""
        connection = connections[self.using]
        connection.ensure_connection()
        if self._backend is None or self._backend[0] is not connection.connection:
            self._backend = None  # until known: a connection lost meanwhile ran no claim
            self._backend = (connection.connection, lostclaims.serving(self.using))

    def _lost_connection(self) -> None:
        """The loop's connection broke: a claim may have committed without its answer,
        or its backend may still be running it (see lostclaims)."""
        self._doubt(LOST_CONNECTION)
        # Not compared with the connection now in place: a COMMIT that failed in
        # atomic() has Django reconnect as it leaves the block.
        known, self._backend = self._backend, None
        if known is None:
            return  # lost before its backend was known: no claim ran on it
        give_up_at = time.monotonic() + conf.get("WORKER_STALE_AFTER")
        with self._lock:
            self._lost.append((known[1], give_up_at))

    def _queue_in_doubt(self, name: str, error: Exception) -> None:
        """The claim of queue ``name`` failed with ``error``, no lost connection (the
        claimer's ``_claim_failed``): the loop's claim is in doubt."""
        self._doubt(f"queue {name!r}: {_error_words(error)}")

    def _doubt(self, cause: str) -> None:
        """Put the loop's claim in doubt for ``cause``: the connection lost
        (``LOST_CONNECTION``) or a failure, said by the hand-back that finds its jobs."""
        self._claim_in_doubt = True
        self._doubts[cause] = None

    def _try_hand_back(self) -> None:
        """``_hand_back_unheld``, failing on its own: an error no lost connection
        explains (a site's trigger refusing the hand-back's UPDATE, a statement timeout)
        failed the whole pass, on every pass, and no queue was claimed while it lasted.
        Said once while it repeats; the claim stays in doubt and the hand-back is tried
        again after a backoff (0.1 s, twice as long after each failure, up to
        QUEUE_RETRY_MAX), the pass going on meanwhile: the jobs it would give back stay
        executing under this worker, not among those it holds, so no claim takes them
        (reclaim_forgotten gets them if it never goes through). A lost connection is
        the loop's, as before."""
        if self._handing_back is None:
            pk = self.record.pk if self.record else "-"
            what = f"worker {pk}: the hand-back of a claim in doubt"
            self._handing_back = logs.LoopStep(logger, what)
        try:
            self._hand_back_unheld()
        except Exception as error:
            if db.connection_trouble(error):
                raise
            self._handing_back.failed(error)
            self._retry_lost_at = time.monotonic() + outage.spread(self._hand_back.failed())
            return
        self._handing_back.passed()
        self._hand_back.reset()

    def _hand_back_unheld(self) -> None:
        """Give back the jobs of a claim whose answer was lost with the connection: it
        may have committed, leaving them executing under this worker, which never
        started them. Run by the loop, before its next claim (sql/hand_back_unheld.sql),
        once the backends of the connections it lost are gone (``_end_lost``). While
        one can't be made sure of (behind a pooler), again every LOST_CLAIM_RETRY
        seconds, until WORKER_STALE_AFTER after it was lost."""
        lost = self._end_lost()
        with self._lock:
            held = [*self.running, *self._unrecorded]
        rows = db.fetch_dicts(
            "hand_back_unheld", {"worker_id": self.record.pk, "held": held}, self.using
        )
        with self._lock:
            self._lost = lost
        doubts, self._doubts = self._doubts, {LOST_CONNECTION: None} if lost else {}
        self._claim_in_doubt = bool(lost)
        self._retry_lost_at = time.monotonic() + LOST_CLAIM_RETRY if lost else None
        if not rows:
            return
        ids = ", ".join(str(row["id"]) for row in sorted(rows, key=lambda r: r["id"]))
        if LOST_CONNECTION in doubts or not doubts:
            logger.warning(
                "worker %s: a claim committed as the connection broke, its answer lost; "
                "job(s) %s handed back (not counted as an attempt)",
                self.record.pk,
                ids,
            )
            return
        # Put in doubt by a failure of its own, no lost connection: said by its cause.
        logger.warning(
            "worker %s: a claim had committed before it failed (%s); job(s) %s handed "
            "back (never started, not counted as an attempt)",
            self.record.pk,
            "; ".join(doubts),
            ids,
        )

    def _end_lost(self) -> list[tuple[lostclaims.Backend | None, float]]:
        """End the backends of the connections the loop lost; those it can't be sure
        are gone, and not yet given up on."""
        with self._lock:
            lost = list(self._lost)
        left = []
        for backend, give_up_at in lost:
            if backend is not None and lostclaims.end(backend, self.using):
                continue
            if time.monotonic() < give_up_at:
                left.append((backend, give_up_at))
                continue
            # Behind a pooler, what is always so after WORKER_STALE_AFTER: no news.
            pooled = backend is None or backend.pooled
            (logger.info if pooled else logger.warning)(
                "worker %s: could not make sure that the backend of a connection it lost "
                "ended (%s); a claim it commits from now on leaves its jobs to "
                "reclaim_forgotten, which counts an attempt",
                self.record.pk,
                _which(backend),
            )
        return left

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            if self._claimer.notified(payload):
                self.wakeup.set()
            return
        action, _, target = payload.partition(":")
        probe = self._probe
        if probe is not None and payload == probe[0]:
            probe[1].set()
        elif action == "stop" and self.record and target in ("all", str(self.record.pk)):
            logger.info("worker %s: stop requested", self.record.pk)
            self.request_stop()
        elif action == "cancel" and (pk := limits.id_in_text(target)) is not None:
            context = self.running.get(pk)
            if context is not None:
                logger.info("job %s cancelled while running", target)
                context.request_cancel()

    def _beat(self) -> None:
        """The heartbeat thread: write the heartbeat, and every RESCUE_INTERVAL rescue
        dead workers' jobs and give back those this one forgot. It must outlive any
        error of a step: ended, it left its worker taken for dead (its jobs rescued)
        while it still ran them. An error that is no database's (a bug of ours) is said
        once with its traceback (``logs.LoopStep``), and the other steps still run."""
        interval = conf.get("HEARTBEAT_INTERVAL")
        rescue_every = conf.get("RESCUE_INTERVAL")
        next_rescue = time.monotonic()
        failed = False
        steps = {
            "beat": logs.LoopStep(logger, f"worker {self.record.pk}: writing its heartbeat"),
            "rescue": logs.LoopStep(logger, f"worker {self.record.pk}: rescuing lost jobs"),
            "reclaim": logs.LoopStep(logger, f"worker {self.record.pk}: reclaiming jobs"),
            # A database's error no outage explains, in any of them: said every
            # HEARTBEAT_INTERVAL while it lasted.
            "refused": logs.LoopStep(logger, f"worker {self.record.pk}: its heartbeat thread"),
        }
        while not self.stopping.wait(interval):
            began = time.monotonic()
            querylog.forget()
            try:
                with steps["beat"]:
                    skew = self.database_clock.measure()
                    if beat(self.record.pk, self.using, skew, failing.written(self)):
                        logger.info("worker %s: stop requested", self.record.pk)
                        self.request_stop()
                    self.heartbeat_ok_at = time.monotonic()
                if failed:  # back after a failure, on a new connection
                    outage.reachable(self.using, began)
                    failed = False
                if time.monotonic() >= next_rescue:
                    with steps["rescue"]:
                        # Heartbeats are stamped by the database: judge them by its clock.
                        maintenance.rescue_orphaned(self.database_clock())
                    with steps["reclaim"]:
                        self.reclaim_forgotten()
                    next_rescue = time.monotonic() + rescue_every
            # (Django's InterfaceError is no DatabaseError: named apart.)
            except (*db.CONNECTION_TROUBLE, DatabaseError) as error:
                if db.connection_trouble(error):  # by its SQLSTATE, not its class
                    outage.unreachable(self.using, error)
                    failed = True
                else:  # refused, or a statement timeout, a lock timeout, a deadlock
                    steps["refused"].failed(error)
                connections[self.using].close()
            else:
                steps["refused"].passed()
        connections[self.using].close()

    def _watch(self) -> None:
        """The watchdog thread: past WORKER_STALE_AFTER without a heartbeat written,
        others presume this worker dead and take its jobs; then it must not go on
        (its writes would be refused, its claims would find its row gone), and a
        clean shutdown would wait on the same dead connections: ``on_stale``."""
        limit = conf.get("WORKER_STALE_AFTER")
        while not self._gone.wait(min(1.0, limit / 4)):
            silent = time.monotonic() - (self.heartbeat_ok_at or time.monotonic())
            if silent > limit:
                self.on_stale(self.record.pk if self.record else None, silent, limit)
                return

    def _check_listen(self) -> None:
        """Warn when LISTEN hears nothing: behind PgBouncer in transaction mode it is
        silently inert, and new jobs then wait for the next poll."""
        if not self._notifier or not self._notifier.connected.wait(LISTEN_PROBE_TIMEOUT):
            return  # not connected: the notifier says so itself
        heard = threading.Event()
        self._probe = (f"probe:{self.record.pk}:{os.getpid()}", heard)
        try:
            db.notify(CONTROL_CHANNEL, self._probe[0], self.using)
        except DatabaseError:
            return  # the database is away: the loop says so
        finally:
            connections.close_all()
        if heard.wait(LISTEN_PROBE_TIMEOUT):
            logger.debug("worker %s: LISTEN heard its probe", self.record.pk)
        else:
            listen = conf.get("LISTEN_DATABASE") or self.using
            logger.warning(
                "worker %s: LISTEN (database %r) did not hear a notification sent through "
                "database %r within %.0fs. Behind PgBouncer in transaction mode LISTEN is "
                "inert: set PGJOBS['LISTEN_DATABASE'] to a direct connection (see "
                "docs/howto/pgbouncer.md). Until then new jobs wait for the next poll "
                "(POLL_INTERVAL %.1fs).",
                self.record.pk,
                listen,
                self.using,
                LISTEN_PROBE_TIMEOUT,
                self.poll_interval,
            )

    def reclaim_forgotten(self) -> int:
        """Return jobs our lease holds that this worker no longer runs (none, unless an
        outcome was dropped by a bug): rescue takes only dead workers' jobs, so
        without this such a job would stay executing for as long as we live."""
        with self._lock:
            if self._claiming or self.record is None:
                return 0  # a claim's jobs may be committed but not yet in ``running``
            if self._lost:
                return 0  # a lost claim's may be committed: the loop gives them back
            held = list(self.running)
            # Jobs claimed since are stamped later than this, give or take the skew of
            # rate-limited claims (stamped by the database): allow for it generously.
            claimed_before = self.clock() - timedelta(seconds=conf.get("WORKER_STALE_AFTER"))
        return maintenance.reclaim_forgotten(self.record.pk, held, claimed_before, self.clock())

    def name(self) -> str | None:
        """How its lines name it ("worker 3"), once it has registered."""
        return f"worker {self.record.pk}" if self.record is not None else None

    def _completer_failed(self) -> None:
        """The completer thread ended on a bug of ours (it said so): stop, exit 1."""
        self.exit_code = 1
        self.request_stop()

    def request_stop(self) -> None:
        """First call: stop claiming and let running jobs finish. Second: hand them back now."""
        if self.stopping.is_set():
            self.hand_back_now.set()
        self.stopping.set()
        self.wakeup.set()

    def shutdown(self) -> None:
        """Stop: wait for the running jobs (up to SHUTDOWN_TIMEOUT), write what finished,
        hand back the rest, remove the worker's row. Each step survives any error of
        another (said, with its traceback if no database's): one hand-back that raised
        a bug of ours left the other jobs and the row to the stale limit's rescue."""
        self.stopping.set()
        timeout = conf.get("SHUTDOWN_TIMEOUT")
        deadline = time.monotonic() + timeout
        pk = self.record.pk if self.record else "-"
        with self._surviving("say what stopping waits for"):
            self._say_what_stopping_waits_for(timeout)
        timeouts = logs.LoopStep(logger, f"worker {pk}: enforcing timeouts while stopping")
        # Not for jobs whose task returned: their outcome is the completer's to write
        # (a kept one may wait for a lock for as long as it is held).
        while self._not_returned() and not self.hand_back_now.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.enforce_timeouts()
            except Exception as error:
                timeouts.failed(error)
            self.hand_back_now.wait(min(remaining, 0.05))
        if self._claim_in_doubt:  # the loop's last claim lost its answer: see _loop
            # Still away: rescue returns them (a crash).
            with self._surviving("give back the jobs of a lost claim"):
                self._hand_back_unheld()
        # Jobs that finished are written, not handed back (which would run them again):
        # within SHUTDOWN_TIMEOUT, as the running jobs are waited for, and at least
        # LAST_WRITES_MIN (a second signal: that alone). It was a fixed 10 s, past the
        # timeout: a grace period set a little above it killed the worker before it
        # handed its other jobs back.
        last_writes_by = time.monotonic() + LAST_WRITES_MIN
        if not self.hand_back_now.is_set():
            last_writes_by = max(deadline, last_writes_by)
        with self._surviving("write the outcomes of the jobs that finished"):
            self._completer.stop(last_writes_by)
        if self._publisher:
            with self._surviving("publish the last events"):
                self._publisher.stop()
        with self._lock:
            unwritten = [c for c in self.running.values() if c.job.id in self._returned]
        if unwritten:
            # Their tasks returned: handed back, they would run again. Their outcome
            # still can't be written (the completer is held by an outage, or a lock
            # outlasted the last try): under our lease, rescue returns them.
            logger.warning(
                "worker %s: %d job(s) whose outcome could not be written left executing "
                "for rescue: %s",
                pk,
                len(unwritten),
                ", ".join(str(c.job.pk) for c in unwritten[:20]),
            )
        # Told to stop (async tasks are cancelled, sync ones see the flag), and never
        # started by a thread from here on; handed back only once the job threads had
        # their moment to end (see _hand_back_given_up).
        given_up = self._give_up_running(unwritten)
        if self._notifier:
            with self._surviving("stop listening"):
                self._notifier.stop()
        if self._pool:
            with self._surviving("stop the job threads"):
                self._pool.shutdown(timeout=POOL_STOP_WAIT)
        self._hand_back_given_up(given_up)
        if self.record:
            with self._surviving(f"remove worker row {self.record.pk}", logging.WARNING):
                # Not its JSON, when a site's delete receiver makes Django fetch the
                # row: queues and failing, written by SQL, may hold anything.
                rows = WorkerProcess.objects.using(self.using).filter(pk=self.record.pk)
                rows.defer("queues", "failing").delete()
        with self._surviving("close its connection"):
            connections[self.using].close()
        self._gone.set()
        logger.info("worker %s stopped%s", pk, _summary(self.stats))

    def _give_up_running(self, unwritten: list[JobContext]) -> list[JobContext]:
        """The jobs a stop gives up on, cancelled: those still running at
        SHUTDOWN_TIMEOUT and those fetched ahead, not ``unwritten`` ones (their task
        returned). A job a thread cancelled already is not ours to hand back: its lease
        is gone, or that thread hands it back (see _run)."""
        given_up = []
        for context in self.running_contexts():
            if context in unwritten:
                continue
            with self._lock:  # see _run: one of us hands a job back, not both
                if context.cancelled:
                    continue
                context.request_cancel()  # async tasks stop; sync ones see the flag
            given_up.append(context)
        return given_up

    def _hand_back_given_up(self, given_up: list[JobContext]) -> None:
        """Hand back the jobs a stop gave up on (``_give_up_running``), as the last
        thing before the worker's row goes and the process ends: a job handed back may
        be claimed by another worker at once, while a sync task still running here
        can't be stopped from outside. Handed back before the job threads were joined
        (a second each), such a job ran in two workers at once for seconds."""
        for context in given_up:
            job = context.job
            # Not handed back: the lease stays valid; rescue of stale workers returns it.
            with self._surviving(f"hand back job {job.pk}"):
                fields = logs.job_fields(job)  # the attempt cut short, as its lines said it
                handed = transitions.hand_back(job)
                logger.warning(
                    "job %s (%s) %s",
                    job.pk,
                    logs.printable(job.task),
                    "handed back (not counted as an attempt)" if handed else "already moved on",
                    extra=fields,  # said outside the job, for --log-format json
                )
                if handed:  # the stop line said "stopped: no jobs" of a job it handed back
                    self._record("handed back")

    @contextlib.contextmanager
    def _surviving(self, what: str, level: int = logging.ERROR) -> Iterator[None]:
        """A step of ``shutdown`` that must not keep the next ones from running: a
        database's error said in a line, any other (a bug of ours) with its traceback."""
        try:
            yield
        except DatabaseError as error:
            logger.log(level, "could not %s: %s", what, error)
        except Exception as error:
            logger.error("could not %s: %s", what, transitions.error_line(error), exc_info=error)

    def _say_what_stopping_waits_for(self, timeout: float) -> None:
        """One line before a stop waits for running jobs: after "received SIGINT" the
        worker said nothing for up to SHUTDOWN_TIMEOUT, and a newcomer could not tell
        it from a hung one, nor knew that a second Ctrl-C hands the jobs back at once.
        Jobs whose task returned (their outcome being written) are not waited for, nor
        are prefetched jobs that never started (handed back as their turn comes; without
        prefetch a job waiting for its thread starts, and is waited for)."""
        if self.hand_back_now.is_set():
            return
        with self._lock:
            not_started = self._queued if self.prefetch > 0 else 0
            waited_for = len(self.running) - len(self._returned) - not_started
        if waited_for > 0:
            logger.info(
                "worker %s stopping: waiting up to %s for %d running job(s) to finish, then "
                "handing them back; stop it again (Ctrl-C, SIGTERM) to hand them back now",
                self.record.pk if self.record else "-",
                logs.delay(timeout),
                waited_for,
            )


def check_prefetch(wanted: object, field: str = "prefetch") -> int | str:
    """``wanted``, if a prefetch: "auto" or a whole number of jobs from 0 to
    MAX_PREFETCH; InvalidOption naming ``field`` otherwise."""
    if wanted == AUTO or (
        isinstance(wanted, int)
        and not isinstance(wanted, bool)
        and 0 <= wanted <= limits.MAX_PREFETCH
    ):
        return wanted if isinstance(wanted, int) else AUTO
    most = f"{limits.MAX_PREFETCH:,}"
    raise InvalidOption(field, f'must be "auto" or 0 to {most} jobs, not {limits.shown(wanted)}')


@dataclass
class _Unwritten:
    """The failure of a job that ignored its timeout, not written yet (the write failed)."""

    since: float  # time.monotonic() of the first failed attempt
    retry_at: float = 0.0
    backoff: outage.Doubling = field(default_factory=lambda: outage.Doubling(ABANDON_RETRY_MAX))
    said_at: float | None = None  # time.monotonic() when the failure was last logged

    @property
    def attempts(self) -> int:
        """Failed attempts so far."""
        return self.backoff.failures


#: A run that ended in these snoozed (Snooze, a busy connector): no attempt was used.
SNOOZED = frozenset({JobState.SCHEDULED.value, JobState.AVAILABLE.value})


#: How a stop line says an outcome that a state's name says badly: "1 retryable" read
#: as a job still pending, where the attempt it counts had failed.
OUTCOME_WORDS = {JobState.RETRYABLE.value: "failed and will retry"}
#: What a stop line counts apart from the attempts: neither used one.
NO_ATTEMPT = frozenset({"snoozed", "handed back"})


def _summary(stats: Counter[str]) -> str:
    """The end of a stop line: " after 3 attempts: 2 completed, 1 failed and will retry,
    1 snoozed".

    "after N attempts": a job retried and then completed counts in both words, which
    read as jobs summed to more than the worker ran. A snooze is no attempt: six of
    them read "after 6 attempts: 6 scheduled" of a job that had never failed. Nor is a
    job handed back at a stop (its attempt is not counted)."""
    words: Counter[str] = Counter()
    for outcome, count in stats.items():
        word = getattr(outcome, "value", outcome)
        words["snoozed" if word in SNOOZED else OUTCOME_WORDS.get(word, word)] += count
    attempts = sum(count for word, count in words.items() if word not in NO_ATTEMPT)
    after = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    return f"{after}: {logs.in_words(words)}"


def _forget(contexts: dict[int, JobContext], context: JobContext) -> None:
    """Drop ``context`` from ``contexts`` if it is still there: its job may have been
    claimed again since (a snooze or retry due at once, written before this run's slot
    was freed), and the job's new run, under the same id, must stay."""
    if contexts.get(context.job.id) is context:
        del contexts[context.job.id]


def _error_words(error: BaseException) -> str:
    """``error`` on one line, as the loop says it: its class and message."""
    return logs.one_line(transitions.error_line(error))


def _which(backend: lostclaims.Backend | None) -> str:
    """A lost connection's backend, in words."""
    if backend is None:
        return "the server did not say which it was"
    if backend.pooled:
        return "behind a pooler: its server connection is not the worker's to end"
    return f"pid {backend.pid} still runs"


#: ``beat``'s default for what its caller doesn't track: that column is not written.
UNTRACKED: Any = object()


def beat(
    worker_id: int,
    using: str,
    clock_skew: float | None = UNTRACKED,
    failing_now: list[dict[str, Any]] | None = UNTRACKED,
) -> bool:
    """Record a heartbeat (by the database's clock, which rescue judges it by), the
    host's measured ``clock_skew`` and what of the worker keeps failing
    (``failing_now``, from ``failing.written``; None: nothing), in the one statement;
    returns whether the worker was asked to stop. What is not given (the inline
    runner measures no skew, tracks no failures) is not written."""
    given = {"clock_skew": clock_skew, "failing": failing_now}
    tracked = {column: value for column, value in given.items() if value is not UNTRACKED}
    rows = WorkerProcess.objects.using(using).filter(pk=worker_id)
    if not rows.update(heartbeat_at=Now(), **tracked):
        return True  # our row is gone: we were presumed dead and our jobs rescued
    return rows.filter(stop_requested=True).exists()


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the loop with the cyclic garbage collector out of the way.

    A busy worker makes and drops a few objects per job, nearly all freed by
    reference counting, yet every 700 allocations the collector ran, and its
    older generations walked everything Django had loaded. What is loaded by now
    is frozen (never walked again) and the youngest generation is collected every
    ``COLLECT_YOUNGEST_EVERY`` allocations instead: 3-24% less worker CPU per no-op
    job in five alternating pairs of drains (median 8%). Workers running side by
    side in one process (tests) share one setting: the first to start changes it,
    the last to stop restores it.
    """
    global _collector_users, _collector_threshold
    with _collector_lock:
        if _collector_users == 0:
            _collector_threshold = gc.get_threshold()
            gc.set_threshold(COLLECT_YOUNGEST_EVERY, *_collector_threshold[1:])
        _collector_users += 1
        # Never unfrozen: that would also unfreeze what the process froze itself
        # (say, after preloading), and a worker's process ends with its loop.
        gc.freeze()
    try:
        yield
    finally:
        with _collector_lock:
            _collector_users -= 1
            if _collector_users == 0:
                gc.set_threshold(*_collector_threshold)


#: Allocations between collections of the youngest generation while workers run.
COLLECT_YOUNGEST_EVERY = 50_000

_collector_lock = threading.Lock()
_collector_users = 0  # workers running in this process
_collector_threshold: tuple[int, ...] = gc.get_threshold()  # as the first one found it
