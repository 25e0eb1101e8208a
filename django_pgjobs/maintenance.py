"""Housekeeping any worker or scheduler may run: rescue lost jobs, prune old ones."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from . import clocks, conf, db, limits, loaded, logs, sending, signals
from .models import Job, WorkerProcess
from .states import JobState

logger = logging.getLogger(__name__)


def rescue_orphaned(
    now: datetime, stale_after: float | None = None, *, dead_workers: Iterable[int] = ()
) -> int:
    """Return jobs held by dead workers to the queue; delete those workers' rows.

    A worker is dead when its heartbeat is older than ``stale_after`` seconds
    (default ``WORKER_STALE_AFTER``) or as far in the future, or at once when it is
    one of ``dead_workers`` (a supervisor saw its process end). The lost attempt
    counts against none of its jobs: each keeps its place in the queue and is marked
    a suspect, to run alone next time (see sql/rescue.sql). Safe to run from many
    processes at once. A ``stale_after`` that is no number of seconds above 0 (a
    negative one took every live worker's jobs) or ``dead_workers`` that are no ids
    raise InvalidOption.
    """
    now = limits.required_now(now)
    if stale_after is None:
        stale_after = conf.get("WORKER_STALE_AFTER")
    stale = timedelta(seconds=limits.seconds(stale_after, "stale_after"))
    dead_workers = limits.row_ids(dead_workers, "dead_workers")
    stale_before = now - stale
    dead = sorted(set(dead_workers))
    using = db.alias()
    with transaction.atomic(using=using):
        # A heartbeat as far ahead as a stale one is behind is no live worker's either:
        # a row written by SQL in the year 9999 held its jobs forever. Ahead of the
        # database's clock too, not only of ``now``: a caller's clock that lags it (a
        # host stepped back, a frozen test clock) must not make every live worker's
        # fresh heartbeat look ahead, and take back every job that runs.
        beyond = max(now, clocks.database_now(using)) + stale
        params = {
            "now": now,
            "stale_before": stale_before,
            "beyond": beyond,
            "dead_workers": dead,
            "most": loaded.limit(),
            "inline": loaded.limit(),  # all sent: these jobs are not run here (loaded.py)
        }
        rescued = db.fetch_jobs("rescue", params, using)
        gone = _delete_workers(
            WorkerProcess.objects.using(using).filter(
                Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__gt=beyond) | Q(pk__in=dead)
            )
        )
    if rescued or gone:
        ids = ", ".join(str(job.pk) for job in rescued[:20]) + (" ..." if len(rescued) > 20 else "")
        logger.warning(
            "removed %s lost worker row(s)%s; returned %s job(s) they held to the queue%s",
            len(gone),
            _named(gone),
            len(rescued),
            f": {ids}" if rescued else "",
        )
    for job in rescued:
        # The error rescue.sql appended says which worker and what happens next.
        logger.info("rescued job %s (%s): %s", job.pk, logs.printable(job.task), _last_error(job))
        name = "job_discarded" if job.state == JobState.DISCARDED else "job_retrying"
        sending.send(getattr(signals, name), name, job, Job, job=job, error=None, rescued=True)
    return len(rescued)


#: Most dead workers a rescue's line names; the others are counted.
NAMED_WORKERS = 10


def _delete_workers(rows: QuerySet[WorkerProcess]) -> list[tuple[int, str, int]]:
    """Delete the worker rows of ``rows`` that no other rescue is deleting (locked ones
    are skipped, as rescue.sql skips their jobs: left to it); returns the (id, host,
    pid) of each, to be named. Not their JSON, when a site's delete receiver makes
    Django fetch the rows: queues and failing, written by SQL, may hold anything."""
    found = list(
        rows.select_for_update(skip_locked=True).order_by("pk").values_list("pk", "host", "pid")
    )
    if found:
        rows.filter(pk__in=[pk for pk, _, _ in found]).defer("queues", "failing").delete()
    return found


def _named(workers: list[tuple[int, str, int]]) -> str:
    """The rows for the line, the first ``NAMED_WORKERS`` named, the others counted
    (``: worker 3 (web-1:4242), ... and 2 more``); a host written by SQL escaped."""
    if not workers:
        return ""
    named = ", ".join(
        f"worker {pk} ({logs.printable(host)}:{pid})" for pk, host, pid in workers[:NAMED_WORKERS]
    )
    more = len(workers) - NAMED_WORKERS
    return f": {named}" + (f" and {more} more" if more > 0 else "")


def _last_error(job: Job) -> str:
    """The error rescue.sql appended; not loaded if the job's errors are too large
    (written by SQL, loaded.py), nor if Python can't read them (written by SQL: an
    ``Unreadable``, their text)."""
    if not job.errors:
        return "(its errors are too large to load; see the job)"
    last = job.errors[-1] if isinstance(job.errors, list) else None
    if not isinstance(last, dict):
        return "(its errors can't be read by Python; see the job)"
    return str(last.get("error"))


def reclaim_forgotten(
    worker_id: int, held: list[int], claimed_before: datetime, now: datetime
) -> int:
    """Return to the queue the jobs of a live worker that it no longer holds.

    Its lease on them outlives whatever made it forget them, and rescue only
    takes a dead worker's jobs. The attempt counts (it ran, or was meant to),
    and the error says what happened. See sql/reclaim_forgotten.sql.
    """
    using = db.alias()
    params = {
        "worker_id": worker_id,
        "held": held,
        "claimed_before": claimed_before,
        "now": now,
        "most": loaded.limit(),
        "inline": loaded.limit(),  # all sent: these jobs are not run here (loaded.py)
    }
    reclaimed = db.fetch_jobs("reclaim_forgotten", params, using)
    for job in reclaimed:
        logger.warning("job %s: worker %s no longer held it; %s", job.pk, worker_id, job.state)
    return len(reclaimed)


def prune_finished(now: datetime, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete jobs finished more than ``older_than`` ago, one short transaction per batch.

    An ``older_than`` that is no timedelta of 0 or more (a negative one deleted jobs
    finished just now) or reaches before year 1 (``timedelta.max`` raised
    OverflowError), or a ``batch_size`` that is no whole number from 1 to 100,000
    (0 looped for ever, deleting nothing) raise InvalidOption. A finished job without
    a finished_at (written by SQL) is dated by its last attempt's start, or else its
    creation (sql/prune_undated.sql)."""
    finished_before = limits.before(now, older_than)
    limits.whole_number(batch_size, "batch_size", 1, 100_000)
    using = db.alias()
    return _prune_undated(finished_before, batch_size, using) + _prune_dated(
        finished_before, batch_size, using
    )


def _prune_undated(finished_before: datetime, batch_size: int, using: str) -> int:
    """Delete the finished jobs without a finished_at dated before ``finished_before``,
    in batches; a batch counts none it keeps, so a short one is the last."""
    params = {"finished_before": finished_before, "batch_size": batch_size}
    total = 0
    while True:
        deleted = db.fetch_dicts("prune_undated", params, using)[0]["deleted"]
        total += deleted
        if deleted < batch_size:
            return total


def _prune_dated(finished_before: datetime, batch_size: int, using: str) -> int:
    """Delete the jobs finished before ``finished_before``, in batches (sql/prune.sql)."""
    total = 0
    # Each batch goes on from the newest finished_at the last one deleted (sql/prune.sql).
    finished_from = datetime.min.replace(tzinfo=UTC)
    while True:
        params = {
            "finished_before": finished_before,
            "finished_from": finished_from,
            "batch_size": batch_size,
        }
        batch = db.fetch_dicts("prune", params, using)[0]
        total += batch["deleted"]
        if batch["deleted"] < batch_size:
            return total
        finished_from = batch["finished_at"]


#: The most steps one pass's search for dependency cycles walks, forward and back each:
#: about a third of a second of the scheduler's maintenance (sql/stranded.sql).
CYCLE_WALK_CAP = 50_000


@dataclass
class CycleSearch:
    """Where the next prune pass's search for dependency cycles starts (after job
    ``after``) and from how many jobs (``origins``; None: all). A graph of waiting jobs
    written by SQL can make the search walk the square of their number: a pass cut at
    CYCLE_WALK_CAP halves its starts next time, from the same place; one not cut goes
    on after them, with twice as many. Each process keeps its own: a restart starts over."""

    after: int = 0
    origins: int | None = None
    steps: int = 0

    def restart(self) -> None:
        self.after, self.origins, self.steps = 0, None, 0

    def params(self) -> dict[str, Any]:
        return {"after": self.after, "origins": self.origins, "walk_cap": CYCLE_WALK_CAP}

    def advance(self, got: dict[str, Any]) -> None:
        """Take the search row of sql/cancel_stranded.sql: how far this pass got."""
        self.steps = got["steps"]
        if max(got["steps"], got["steps_back"]) < CYCLE_WALK_CAP:
            done_all = self.origins is None or got["origins"] < self.origins
            self.after = 0 if done_all else got["last_origin"]
            self.origins = None if self.origins is None else self.origins * 2
            return
        logger.warning(
            "the dependency cycle search stopped after %s steps from %s job(s) after job %s "
            "(waiting jobs written so that it walks far); the next prune goes on from there",
            CYCLE_WALK_CAP,
            got["origins"],
            self.after,
        )
        if got["origins"] > 1:
            self.origins = got["origins"] // 2
        else:  # one job's own walk is longer: a cycle of more jobs is not found from it
            self.after, self.origins = got["last_origin"] or 0, 1


CYCLE_SEARCH = CycleSearch()


def cancel_stranded(now: datetime, search: CycleSearch = CYCLE_SEARCH) -> int:
    """Cancel waiting jobs that nothing can release: a dependency of theirs doesn't
    exist (deleted around ``transitions.delete_many``) or finished without releasing
    them, or no unfinished one is left although they still count some; and those
    counting fewer than they wait for, whose dependencies' finishes the counter's
    CHECK would refuse; and the jobs of a dependency cycle. Each is logged; see
    sql/cancel_stranded.sql. ``now`` is checked and converted as ``rescue_orphaned``'s
    (InvalidOption): sent as given, a UTC offset PostgreSQL doesn't take (+20:00), a
    naive time or text failed in SQL and aborted the caller's transaction."""
    now = limits.required_now(now)
    rows = db.fetch_dicts("cancel_stranded", {"now": now, **search.params()})
    cancelled = [row for row in rows if row["id"] is not None]
    search.advance(next(row for row in rows if row["id"] is None))
    for row in cancelled:
        logger.warning(
            "job %s (%s) can never run: %s; cancelled",
            row["id"],
            logs.printable(row["task"]),
            row["error"],
        )
    return len(cancelled)


@dataclass(frozen=True)
class Stranded:
    """What ``find_stranded`` found: how many, the first few, and whether the search for
    cycles stopped at CYCLE_WALK_CAP (some may then be missing)."""

    total: int
    first: list[dict[str, Any]]
    search_cut: bool


def find_stranded(shown: int, using: str | None = None) -> Stranded:
    """How many waiting jobs ``cancel_stranded`` would cancel, and the first ``shown``
    of them (id, task, and the error it would write), cancelling none: with pruning off
    nothing else says they will never run. See sql/find_stranded.sql."""
    params = {"shown": shown, **CycleSearch().params()}  # from the start, bounded
    rows = db.fetch_dicts("find_stranded", params, using)
    first = [row for row in rows if row["id"] is not None]
    cut = max(rows[0]["steps"], rows[0]["steps_back"]) >= CYCLE_WALK_CAP
    return Stranded(first[0]["total"] if first else 0, first, cut)
