"""The scheduler loop: fire due ticks, then sleep until the next tick or an edit.

The loop keeps no copy of the schedules: every pass reads what is due from the
table, so an edit only has to wake it. Wake-ups come from NOTIFY on
``pgjobs_schedules`` (a schedule was created, edited or deleted), from a
reconnect of the LISTEN connection (notifications sent while it was away are
lost, so it re-reads), and from the timer set for the next tick. Maintenance
(prune, rescue) runs on a thread of its own so a long prune never delays a tick.

Ticks fire by the database's clock, not the host's: the default clock is a
``clocks.DatabaseClock``, whose skew is measured at every pass (one round trip),
so a host whose clock runs 45 s fast fires nothing 45 s early. A running
scheduler keeps a ``SchedulerProcess`` row up to date on every pass, with the skew
it measured (the admin shows it).

``run_once(now)`` is one pass without the loop. ``loop(sleep_until)`` takes its
sleep as a parameter so a test can drive it with a simulated clock (the waits between
retries while the database is unreachable are real time: see outage.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, connections
from django.db.models.functions import Now

from . import (
    __version__,
    clocks,
    conf,
    db,
    housekeeping,
    limits,
    liveness,
    logs,
    outage,
    querylog,
    schedules,
)
from .cron import COUNT_LIMIT
from .housekeeping import RoutineSpec
from .models import Schedule, SchedulerProcess
from .notifier import Notifier
from .schedules import SCHEDULES_CHANNEL, Fired, InvalidSchedule

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Longest sleep without a look at the table: covers lost notifications and clock jumps.
MAX_SLEEP = timedelta(seconds=60)
#: A scheduler passes at least every MAX_SLEEP: a row not updated in twice that is a
#: scheduler that stopped (the admin's Scheduler processes, ``pgjobs health``).
STALE_AFTER = 2 * MAX_SLEEP
#: Shortest sleep when something due could not be fired (another scheduler holds it).
MIN_SLEEP = timedelta(seconds=0.5)
#: Rows of schedulers not seen for this long (or with a heartbeat as far ahead of the
#: database's clock: no running scheduler's) are deleted when a scheduler starts.
FORGET_SCHEDULERS_AFTER = timedelta(hours=1)
#: Most seconds between two passes of the loop while they fail: 0.1 s after the
#: first failure, then twice as long each time (cut short by an edit or a stop).
LOOP_RETRY_MAX = 10.0
#: The same for the maintenance thread while its connection is lost.
MAINTENANCE_RETRY_MAX = 5.0


@dataclass
class Report:
    """What one pass did."""

    fired: list[Fired] = field(default_factory=list)
    routines: dict[str, int] = field(default_factory=dict)
    #: When the next tick or routine is due (None: nothing is scheduled).
    next_wakeup: datetime | None = None


class Scheduler:
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        routines: Iterable[RoutineSpec] | None = None,
        max_sleep: timedelta = MAX_SLEEP,
    ) -> None:
        self.using = conf.get("DATABASE")
        #: By default the database's clock, measured on every pass (see clocks.py).
        self.clock: Clock = clock or clocks.DatabaseClock(self.using)
        self.record: SchedulerProcess | None = None
        self.routines = housekeeping.configured_routines() if routines is None else list(routines)
        self.grace = timedelta(seconds=conf.get("MISFIRE_GRACE"))
        self.max_sleep = max_sleep
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.stats: Counter[str] = Counter()
        self._notifier: Notifier | None = None
        self._housekeeper: threading.Thread | None = None
        self._reported_broken: set[str] = set()
        #: Schedules the last pass could not plan: they stay due, so the next wake-up
        #: is planned without them (each pass tries them again; an edit wakes it).
        self._unplannable: set[int] = set()

    # -- one pass -----------------------------------------------------------------------

    def fire_due(self, now: datetime | None = None) -> list[Fired]:
        """Fire every schedule due at ``now``. Raises the first transient error that
        rolled back a schedule's ticks, once the others are recorded: the loop says it
        and backs off as before, and a later pass fires them."""
        now = limits.given_now(now) or self._now()
        fired, broken, deferred = schedules.fire_due(now, using=self.using, grace=self.grace)
        for result in fired:
            self._record(result)
        for error in broken:
            self._report_broken(error)
        self._unplannable = {e.schedule_id for e in broken if e.schedule_id is not None}
        # One fixed and broken again is said again.
        self._reported_broken &= {str(error) for error in broken}
        if deferred:
            raise deferred[0]
        return fired

    def run_once(self, now: datetime | None = None) -> Report:
        """Fire what is due at ``now`` and run the maintenance routines that are due."""
        now = limits.given_now(now)
        if now is None:
            clocks.measure(self.clock)
            now = self._now()
        fired = self.fire_due(now)
        done = housekeeping.run_due(self.routines, now, self.using)
        candidates = [
            schedules.next_due_at(self.using, self._unplannable),
            housekeeping.next_due_at(self.routines, now, self.using),
        ]
        return Report(fired, done, min((c for c in candidates if c), default=None))

    def _now(self) -> datetime:
        """The clock's reading, checked as a given ``now`` is (a test's clock may stand
        anywhere)."""
        now = self.clock()
        limits.required_now(now, "the clock's now")
        return now

    def _record(self, fired: Fired) -> None:
        if fired.error:
            self.stats["failed"] += 1
        elif fired.skipped:
            self.stats["skipped"] += 1
        elif fired.fire_at is not None:
            self.stats["fired"] += 1
            logger.info(
                "schedule %r: fired tick %s as job %s", fired.schedule, fired.fire_at, fired.job_id
            )
        if fired.missed:
            self.stats["missed"] += fired.missed
            logger.warning(
                "schedule %r: %s tick(s) missed while no scheduler could fire them%s",
                fired.schedule,
                # Counted up to COUNT_LIMIT: a day's ticks of every second are 86,400.
                f"at least {fired.missed}" if fired.missed >= COUNT_LIMIT else fired.missed,
                "" if fired.fire_at else " (dropped by its catch_up policy)",
            )

    def _report_broken(self, error: InvalidSchedule) -> None:
        # A broken row stays due on every pass; say so once, not once a pass.
        if str(error) not in self._reported_broken:
            self._reported_broken.add(str(error))
            logger.error("%s; fix it in the admin", error)

    # -- the loop -----------------------------------------------------------------------

    def loop(self, sleep_until: Callable[[datetime], None] | None = None) -> None:
        """Pass after pass until ``request_stop``; ``sleep_until`` defaults to real time."""
        sleep_until = sleep_until or self._sleep_until
        backoff = outage.Doubling(LOOP_RETRY_MAX)
        passing = logs.LoopStep(logger, "a scheduler pass")
        while not self.stopping.is_set():
            self.wakeup.clear()  # before reading: an edit from now on wakes the next sleep
            querylog.forget()
            began, seen = time.monotonic(), outage.generation(self.using)
            try:
                self._check_in()
                now = self.clock()
                self.fire_due(now)
                wake_at = self._wake_at(now)
                if backoff.failures:  # back after a failure, on a new connection
                    outage.reachable(self.using, began)
                backoff.reset()
                passing.passed()
            except Exception as error:
                if db.connection_trouble(error):  # by its SQLSTATE, not its class
                    outage.unreachable(self.using, error)  # said once per outage
                    connections[self.using].close()
                    # Cut short once another connection of this process got through
                    # (the maintenance thread's, the LISTEN one's), as the worker loops
                    # are, or by an edit or a stop: it waited out its backoff (up to
                    # 10 s) unless the LISTEN connection, which may be another alias's,
                    # reconnected. A retry's wait, in real time: not a tick's, so not
                    # sleep_until's.
                    outage.pause(
                        self.using, outage.spread(backoff.failed()), self.wakeup, since=seen
                    )
                    continue
                # A bug of ours meeting an odd row, or a statement the server refused or
                # gave up on (a statement timeout, a lock timeout, a deadlock: warned as
                # an outage on every retry; the pass's ticks rolled back, fired on a
                # later pass): no outage. It ended the loop, and the scheduler with it.
                # Said once while it repeats; passes again after the same backoff,
                # sooner on an edit or a stop.
                passing.failed(error)
                if isinstance(error, DatabaseError):
                    connections[self.using].close()
                self.wakeup.wait(outage.spread(backoff.failed()))
                continue
            sleep_until(wake_at)

    def _check_in(self) -> None:
        """Measure the clock's skew (a database clock) and update this scheduler's row."""
        skew = clocks.measure(self.clock)
        if self.record is not None:
            rows = SchedulerProcess.objects.using(self.using).filter(pk=self.record.pk)
            if not rows.update(heartbeat_at=Now(), clock_skew=skew):  # deleted by hand
                self.record = self._register(skew)

    def _register(self, skew: float | None) -> SchedulerProcess:
        return SchedulerProcess.objects.using(self.using).create(
            host=conf.host_name(),
            pid=os.getpid(),
            started_at=Now(),
            heartbeat_at=Now(),
            clock_skew=skew,
        )

    def _wake_at(self, now: datetime) -> datetime:
        next_tick = schedules.next_due_at(self.using, self._unplannable)
        if next_tick is None:
            return now + self.max_sleep
        if next_tick <= now:  # due but not fired: another scheduler holds it
            return now + MIN_SLEEP
        return min(next_tick, now + self.max_sleep)

    def _sleep_until(self, when: datetime) -> None:
        seconds = (when - self.clock()).total_seconds()
        if seconds > 0:
            self.wakeup.wait(seconds)

    def start(self) -> None:
        """Sync settings-declared schedules, start listening, start maintenance."""
        created = schedules.sync_from_settings(self.using)
        if created:
            logger.info("created schedule(s) from settings: %s", ", ".join(created))
        # Those ahead too: one in the year 9999 (written by SQL) was kept for ever.
        rows = SchedulerProcess.objects.using(self.using)
        rows.exclude(liveness.alive(FORGET_SCHEDULERS_AFTER)).delete()
        self.record = self._register(clocks.measure(self.clock))
        self._notifier = Notifier(
            [SCHEDULES_CHANNEL],
            self._on_notify,
            self._on_reconnect,
            using=conf.get("LISTEN_DATABASE") or self.using,
            check_every=conf.get("HEARTBEAT_INTERVAL"),
        )
        self._notifier.start()
        # Listen before the first read, so no edit falls between the two.
        if not self._notifier.connected.wait(5):
            logger.warning("LISTEN not connected yet; checking the table every %s", self.max_sleep)
        if self.routines:
            self._housekeeper = threading.Thread(
                target=self._housekeep, name="pgjobs-housekeeping", daemon=True
            )
            self._housekeeper.start()
        logs.process_fields["scheduler_id"] = self.record.pk
        logger.info(
            "django-pgjobs %s scheduler %s started: database %s, %s schedule(s), "
            "maintenance: %s, pid %s",
            __version__,
            self.record.pk,
            logs.database(self.using),
            Schedule.objects.using(self.using).count(),
            ", ".join(
                f"{r.name} every {logs.delay(r.interval.total_seconds())}" for r in self.routines
            )
            or "off",
            os.getpid(),
        )

    def run(self) -> None:
        self.start()
        try:
            self.loop()
        finally:
            self.shutdown()

    def name(self) -> str | None:
        """How its lines name it ("scheduler 2"), once it has registered."""
        return f"scheduler {self.record.pk}" if self.record is not None else None

    def request_stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def shutdown(self) -> None:
        self.stopping.set()
        if self._notifier:
            self._notifier.stop()
        if self._housekeeper:
            self._housekeeper.join(10)
        if self.record is not None:
            try:
                SchedulerProcess.objects.using(self.using).filter(pk=self.record.pk).delete()
            except DatabaseError as error:
                logger.warning("could not remove scheduler row %s: %s", self.record.pk, error)
        connections[self.using].close()
        logger.info(
            "%s stopped: %s",
            self.name() or "scheduler",  # its start line named it: so does this one
            logs.in_words(self.stats) if self.stats else "nothing fired",
        )

    def _on_notify(self, channel: str, payload: str) -> None:
        self.wakeup.set()

    def _on_reconnect(self) -> None:
        logger.debug("LISTEN reconnected; re-reading schedules")
        outage.retry_now(self.using)  # LISTEN_DATABASE may be another alias: wake maintenance
        self.wakeup.set()

    def _housekeep(self) -> None:
        backoff = outage.Doubling(MAINTENANCE_RETRY_MAX)
        planning = logs.LoopStep(logger, "maintenance")
        while not self.stopping.is_set():
            began, seen = time.monotonic(), outage.generation(self.using)
            querylog.forget()
            try:
                housekeeping.run_due(self.routines, self.clock(), self.using)
                wake_at = housekeeping.next_due_at(self.routines, self.clock(), self.using)
                delay = (wake_at - self.clock()).total_seconds() if wake_at else 60.0
                if backoff.failures:  # back after a failure, on a new connection
                    outage.reachable(self.using, began)
                backoff.reset()
                planning.passed()
            except Exception as error:
                if db.connection_trouble(error):  # by its SQLSTATE, not its class
                    outage.unreachable(self.using, error)  # said once per outage
                    connections[self.using].close()
                    # As the scheduler loop's: cut short once another connection of
                    # this process (the loop's, the LISTEN one) got through, not a
                    # fixed 5 s.
                    outage.pause(
                        self.using,
                        outage.spread(backoff.failed()),
                        self.stopping,
                        since=seen,
                    )
                    continue
                # A bug of ours (it ended the thread, silently), a statement the server
                # refused (no outage: said again every 5 s while it lasted) or gave up
                # on (a statement timeout, a lock timeout, a deadlock: warned as an
                # outage on every retry): said once while it repeats, tried again in 5 s.
                planning.failed(error)
                if isinstance(error, DatabaseError):
                    connections[self.using].close()
                delay = 5.0
            self.stopping.wait(min(max(delay, 1.0), self.max_sleep.total_seconds()))
        connections[self.using].close()
