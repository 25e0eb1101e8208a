"""The completer: write the outcomes of a worker's jobs in batches, on a thread of its own.

The pool's threads queue each outcome (``Completer.outcomes``); the completer writes
everything that piled up while it wrote the last batch in one statement (one
commit), keeps an outcome a transient error held (tried again after a backoff), and
hands each job back to its worker once its outcome is written or given up on
(``finished``), with when the jobs it put back are due (``wake_when_due``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.db import DatabaseError, connections

from . import db, events, limits, logs, outage, querylog, transitions
from .context import JobContext
from .execution import record
from .states import JobState
from .transitions import Outcome

# The worker's logger: its lines are said as they were before the completer had a
# module of its own (a site's logging config names the logger).
logger = logging.getLogger("django_pgjobs.worker")

#: Most outcomes written by one statement.
MAX_OUTCOME_BATCH = 500

#: Most seconds between two tries of an outcome kept because a transient error
#: (``db.transient``: a lock held on its row, a statement timeout) outlasted its
#: tries: 0.1 s after the first, then twice as long each time (see Completer._keep).
KEPT_RETRY_MAX = 5.0

#: What ``_write_alone`` says of an outcome it kept to try again later.
KEPT = "kept"

#: Where the outcomes of a job go (None: the completer's last pass), as queued.
Queued = tuple[JobContext, Outcome | str] | None
#: What the completer tells its worker of jobs done with: each with its end state.
Finished = Callable[[list[tuple[JobContext, str]]], None]


@dataclass
class _Kept:
    """An outcome the completer keeps: a transient error outlasted its tries."""

    context: JobContext
    outcome: Outcome
    due: float = 0.0  # time.monotonic()
    backoff: outage.Doubling = field(default_factory=lambda: outage.Doubling(KEPT_RETRY_MAX))

    @property
    def tries(self) -> int:
        """Tries that failed: the first write's, then one per retry."""
        return self.backoff.failures


class Completer:
    """Writes the outcomes of a worker's jobs that ran on its pool.

    ``finished`` frees the slots of jobs whose outcome is written (or given up on);
    ``wake_when_due`` wakes the worker's loop when the jobs put back (a retry) are due.
    Both are the worker's, called from the completer's thread.
    """

    def __init__(
        self,
        finished: Finished,
        wake_when_due: Callable[[list[float]], None],
        crashed: Callable[[], None] = lambda: None,
    ) -> None:
        # Outcomes of jobs that ran on the pool, waiting to be written by the
        # completer thread: everything that piled up while it wrote the last
        # batch goes in one statement (one commit) next.
        self.outcomes: queue.SimpleQueue[Queued] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        # Outcomes a transient error kept from being written (a lock held on the job's
        # row, a statement timeout), by job id, tried again after a backoff while the
        # other outcomes are written: their jobs keep their slots meanwhile, and are
        # neither marked crashed (reclaimed, run again) nor handed back. The completer
        # thread's own; see _keep.
        self.kept: dict[int, _Kept] = {}
        # Past it, the completer's last pass at shutdown tries no more kept outcomes.
        self._last_try_by: float | None = None
        self._publish: Callable[[Iterable[events.Change]], None] = _discard
        self._finished = finished
        self._wake_when_due = wake_when_due
        # The worker stops if this thread ends on a bug of ours: its slots would stay
        # taken by outcomes no one writes, and it would claim nothing more, unseen.
        self._crashed = crashed

    def start(self, publisher: events.Publisher | None) -> None:
        """Start the completer thread; the outcomes' events go to ``publisher``
        (None: ``PGJOBS["EVENTS"]`` is off)."""
        self._publish = publisher.publish if publisher else _discard
        self.thread = threading.Thread(target=self._complete, name="pgjobs-completer", daemon=True)
        self.thread.start()

    def stop(self, last_try_by: float) -> None:
        """Write what is queued, then stop the completer thread: the kept outcomes get
        a last try each, until ``last_try_by`` (time.monotonic()), and it is waited for
        until then. Not longer: a completer held by an outage never returns, and the
        rest of shutdown (handing the other jobs back, removing the row) must run
        before the process manager's grace period ends."""
        self._last_try_by = last_try_by
        if self.thread is not None and self.thread.is_alive():
            self.outcomes.put(None)
            self.thread.join(max(0.0, last_try_by - time.monotonic()))

    def _complete(self) -> None:
        """The completer thread: write queued outcomes in batches, then free their slots.

        A job keeps its slot until its outcome is written, so the concurrency
        limit covers written-or-not outcomes too, and shutdown can tell jobs
        still running from jobs done.
        """
        db.prepare_on_this_thread()
        try:
            self._write_until_stopped()
        except Exception as error:  # not an outage (written through): a bug of ours
            logger.critical(
                "the completer thread failed (%s: %s); the worker stops: the outcomes it "
                "held are not written, and their jobs are rescued as a crashed worker's",
                type(error).__name__,
                limits.shortened(str(error), 300),
                exc_info=error,
            )
            self._crashed()
        finally:
            connections.close_all()

    def _write_until_stopped(self) -> None:
        """Write queued outcomes until the last pass (a None queued) is done."""
        while True:
            try:
                item = self.outcomes.get(timeout=self._kept_due_in())
            except queue.Empty:  # a kept outcome is due
                self._retry_kept()
                continue
            if item is None:
                break
            batch = [item]
            last = False
            while len(batch) < MAX_OUTCOME_BATCH:
                try:
                    more = self.outcomes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    last = True
                    break
                batch.append(more)
            querylog.forget()
            self._write_batch(batch)
            self._retry_kept()
            if last:
                break
        self._retry_kept(last=True)

    def _write_batch(self, batch: list[tuple[JobContext, Outcome | str]]) -> None:
        pending = [(c, o) for c, o in batch if isinstance(o, Outcome)]
        publish = self._publish
        try:
            # Never given up on while this worker lives: a dropped outcome would
            # leave its job executing under our live lease. The slots stay taken
            # meanwhile, which stops claiming (see Worker._free). Past the stale limit
            # the watchdog ends the process, and rescue returns the jobs.
            outcomes = [outcome for _, outcome in pending]
            states = record(outcomes, publish, give_up_after=None)
        except Exception as error:  # no outage: a row or our own bug refused the statement
            if len(pending) == 1:
                states = [self._outcome_refused(*pending[0], error)]
            else:
                logger.warning(
                    "writing %d outcomes failed (%s: %s); writing each alone",
                    len(pending),
                    type(error).__name__,
                    limits.shortened(outage.describe(error), 300),
                )
                states = _write_alone(pending, publish, self._outcome_refused)
        kept = {i for i, state in enumerate(states) if state == KEPT}
        pending = [p for i, p in enumerate(pending) if i not in kept]
        states = [state for i, state in enumerate(states) if i not in kept]
        self._ended(pending, states, [(c, o) for c, o in batch if not isinstance(o, Outcome)])

    def _ended(
        self,
        pending: list[tuple[JobContext, Outcome]],
        states: list[str],
        unwritten: list[tuple[JobContext, str]] | None = None,
    ) -> None:
        """Free the slots of these jobs, their outcomes written (``states``, or given up
        on), and wake the loop when the ones put back are due."""
        ended = [(context, state) for (context, _), state in zip(pending, states, strict=True)]
        ended += unwritten or []  # the pool's "crashed"
        self._wake_when_due(
            [
                (outcome.run_at - outcome.at).total_seconds()
                for (_, outcome), state in zip(pending, states, strict=True)
                if state == JobState.RETRYABLE and outcome.run_at is not None
            ]
        )
        self._finished(ended)

    def _outcome_refused(self, context: JobContext, outcome: Outcome, error: Exception) -> str:
        """What becomes of an outcome the database refused, written alone: a transient
        error (``db.transient``) that outlasted its tries keeps it, tried again later
        (KEPT); any other refusal is said and its job left for rescue ("crashed")."""
        if db.transient(error):
            self._keep(context, outcome, error)
            return KEPT
        _say_refused(outcome, error)
        return "crashed"

    def _keep(self, context: JobContext, outcome: Outcome, error: Exception) -> None:
        """Keep an outcome a transient error held (a lock on the job's row that a
        migration or an operator's shell holds, a statement timeout), said once: marked
        crashed, its job was reclaimed and run again although its task completed; the
        whole batch waiting on it held every other outcome. Its job keeps its slot and
        its lease (still running as far as this worker knows) until it is written."""
        job = outcome.job
        kept = self.kept[job.id] = _Kept(context, outcome)
        kept.due = time.monotonic() + kept.backoff.failed()
        logger.warning(
            "job %s (%s): its outcome (%s) could not be written: %s: %s; kept and tried "
            "again with a backoff (up to %s apart) until written, the job executing under "
            "this worker's lease meanwhile; the other outcomes are written as usual",
            job.pk,
            logs.printable(job.task),
            getattr(outcome.state, "value", outcome.state),
            type(error).__name__,
            limits.shortened(outage.describe(error), 500),
            logs.delay(KEPT_RETRY_MAX),
            extra=logs.job_fields(job),
        )

    def _kept_due_in(self) -> float | None:
        """Seconds until the first kept outcome is due (None: none kept)."""
        if not self.kept:
            return None
        return max(0.0, min(k.due for k in self.kept.values()) - time.monotonic())

    def _retry_kept(self, last: bool = False) -> None:
        """Try the kept outcomes that are due (``last``: each once, at shutdown, until
        ``_last_try_by``), each alone and once: a lock still held costs one timeout, not
        three, of the completer's time, and the other outcomes wait no longer."""
        publish = self._publish
        for job_id, kept in list(self.kept.items()):
            now = time.monotonic()
            if last:
                if self._last_try_by is not None and now > self._last_try_by:
                    break
            elif kept.due > now:
                continue
            job = kept.outcome.job
            try:
                [state] = record([kept.outcome], publish, give_up_after=None, tries=1)
            except Exception as error:
                if db.transient(error):
                    wait = kept.backoff.failed()
                    kept.due = time.monotonic() + wait
                    logger.debug(
                        "job %s (%s): its kept outcome still could not be written (try %d): "
                        "%s; trying again in %s",
                        job.pk,
                        logs.printable(job.task),
                        kept.tries,
                        limits.shortened(outage.describe(error), 300),
                        logs.delay(wait),
                        extra=logs.job_fields(job),
                    )
                    continue
                _say_refused(kept.outcome, error)
                state = "crashed"
            else:
                logger.info(
                    "job %s (%s): its kept outcome (%s) was written after %d tries",
                    job.pk,
                    logs.printable(job.task),
                    getattr(kept.outcome.state, "value", kept.outcome.state),
                    kept.tries + 1,
                    extra=logs.job_fields(job),
                )
            del self.kept[job_id]
            self._ended([(kept.context, kept.outcome)], [state])


def _write_alone(
    pending: list[tuple[JobContext, Outcome]],
    publish: Callable[[Iterable[events.Change]], None],
    refused: Callable[[JobContext, Outcome, Exception], str],
) -> list[str]:
    """Write each outcome in a statement of its own, after their batch failed: one job
    whose row a trigger or constraint refuses (a site's own trigger, say) then costs
    only that job, which stays executing under our lease until a rescue pass returns
    it ("crashed"), or whose outcome is kept (KEPT) if a transient error held it (see
    ``Completer._outcome_refused``); the others' outcomes land instead of being run
    again."""
    states = []
    for context, outcome in pending:
        try:
            states += record([outcome], publish, give_up_after=None)
        except Exception as error:
            states.append(refused(context, outcome, error))
    return states


def _say_refused(outcome: Outcome, error: Exception) -> None:
    """Say, once, that the outcome of ``outcome``'s job could not be written, why, and
    what becomes of it: the database's refusal (a site's trigger, a constraint, a
    statement timeout that lasted) in a line; a bug of ours with its traceback."""
    job = outcome.job
    ours = not isinstance(error, DatabaseError)
    logger.error(
        "job %s (%s): its outcome (%s) could not be written: %s; it stays executing "
        "under this worker's lease until reclaimed, its attempt counted",
        job.pk,
        logs.printable(job.task),
        getattr(outcome.state, "value", outcome.state),
        transitions.error_line(error)
        if ours
        else f"{type(error).__name__}: {limits.shortened(outage.describe(error), 500)}",
        exc_info=error if ours else None,
        extra=logs.job_fields(job),
    )


def _discard(changes: Iterable[events.Change]) -> None:
    """Where a worker's outcome events go with ``PGJOBS["EVENTS"]`` off."""
