"""Numbers about the queue for people watching it: counts, depths, throughput.

Everything here must stay cheap on a table of millions of jobs, because the
admin runs it on every page load and the dashboard every few seconds:

- counts stop at a cap and fall back to the planner's estimate past it, and a
  count found past its cap is not run again for OVER_CAP_SECONDS (estimated), and
  one the planner expects past ESTIMATE_PAST is not run at all;
- grouped counts only touch states that have an index to count from;
- time windows read the indexes on ``finished_at`` and ``state``, and the
  dashboard's hour at most PER_SLICE finished jobs per SLICE_SECONDS (estimating
  past that), rather than every job of the hour.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.core.signals import setting_changed
from django.db import OperationalError, connections
from django.db.models import (
    Count,
    Min,
    QuerySet,
    Value,
)
from django.dispatch import receiver
from django.utils import timezone

from . import clocks, conf, db, failing, limits, liveness, shown
from .models import Job, Queue, WorkerProcess
from .states import ACTIVE, CLAIMABLE, FINISHED, JobState

S = JobState

#: Exact counts stop here; above it the planner's estimate is shown.
COUNT_CAP = 10_000

#: A job table of at most this many rows is counted under any filter in the admin:
#: counting it reads no more than that (``few_jobs``). Under a filter no index serves,
#: a larger one shows the planner's estimates, which on a new project's few jobs were
#: "≈1" in every state's tab. 0: never.
FEW_JOBS = 2_000

#: How long ``tallies_within`` counts (a question before a bulk change: the admin's
#: "Run completed jobs again?", ``pgjobs retry`` by filter) before it estimates.
COUNT_SECONDS = 5

#: States whose jobs are still to run, shown as a queue's depth.
#: In declaration order: waiting, scheduled, available, executing, retryable.
DEPTH_STATES: tuple[str, ...] = tuple(s.value for s in JobState if s in ACTIVE)

#: DEPTH_STATES by the index that holds their jobs keyed by queue: pgjobs_job_claim,
#: pgjobs_job_executing, pgjobs_job_state_queue_rest.
DEPTH_INDEXES: tuple[list[str], ...] = (
    [S.AVAILABLE.value],
    [S.EXECUTING.value],
    [s for s in DEPTH_STATES if s not in (S.AVAILABLE, S.EXECUTING)],
)


@dataclass(frozen=True)
class Tally:
    """A count that is exact up to ``COUNT_CAP`` and an estimate above it."""

    value: int
    exact: bool = True

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"≈{_short(self.value)}"


def _short(n: int) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + suffix
    return str(n)


def few_jobs(using: str) -> bool:
    """Whether the job table of ``using`` holds at most ``FEW_JOBS`` rows: a count of at
    most ``FEW_JOBS + 1`` of them (none with ``FEW_JOBS`` 0)."""
    if FEW_JOBS <= 0:
        return False
    return Job.objects.using(using).order_by()[: FEW_JOBS + 1].count() <= FEW_JOBS


def tally(
    jobs: QuerySet[Any], cap: int | None = None, *, clock: Callable[[], float] | None = None
) -> Tally:
    """Count ``jobs`` exactly if there are at most ``cap``, else estimate.

    The capped count reads at most ``cap + 1`` rows; the estimate is the
    planner's row estimate for the same query, so it costs no scan at all.
    """
    return tallies([jobs], cap, clock=clock)[0]


def tallies(
    querysets: Sequence[QuerySet[Any]],
    cap: int | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> list[Tally]:
    """``tally`` of each of ``querysets`` (of one database) in at most two statements:
    one counts each up to ``cap + 1`` rows, one EXPLAIN estimates those past the cap.

    A page's eight tallies were eight round trips and eight plannings before.
    A count that came out past its cap is not run again for OVER_CAP_SECONDS (by
    ``clock``, seconds; ``time.monotonic``), nor estimated again: its estimate of then
    is the tally straight away. A count the planner expects past ESTIMATE_PAST rows is
    not run at all: then the EXPLAIN comes first (on a table whose
    statistics say it could be that large), and is the only one.
    """
    cap = COUNT_CAP if cap is None else cap
    if not querysets:
        return []
    using = querysets[0].db
    now = (clock or time.monotonic)()
    counts: dict[int, int] = {}  # by position
    guessed: dict[int, int] = {}  # by position: estimated rather than counted
    asked: dict[int, tuple[Any, ...] | None] = {}  # position -> _count_key
    compiled_at: dict[int, tuple[str, tuple[Any, ...]]] = {}
    for i, jobs in enumerate(querysets):
        compiled = _sql(jobs.order_by().values("pk")[: cap + 1])
        if compiled is None:
            counts[i] = 0
            continue
        key = _count_key(using, compiled)
        lately = None if key is None else _over_cap_lately(key, now)
        if lately is not None:
            guessed[i] = lately
            continue
        asked[i], compiled_at[i] = key, compiled
    planned = _planned_large(querysets, asked, now)
    counted = [i for i in asked if planned.get(i, 0) <= ESTIMATE_PAST]
    counts.update(_capped_counts(using, {i: compiled_at[i] for i in counted}))
    over = [i for i in counted if counts[i] > cap]
    unplanned = [i for i in over if i not in planned]
    planned.update(zip(unplanned, estimates([querysets[i] for i in unplanned]), strict=True))
    for i, key in asked.items():
        if i not in counted or i in over:
            guessed[i] = planned[i]
            if key is not None:
                _remember_over_cap(key, now + OVER_CAP_SECONDS, planned[i])
        elif key is not None and i in planned:
            _remember_under_large(key, now + OVER_CAP_SECONDS)
    return [
        Tally(max(guessed[i], cap + 1), exact=False) if i in guessed else Tally(counts[i])
        for i in range(len(querysets))
    ]


@dataclass(frozen=True)
class TimedTallies:
    """What ``tallies_within`` found: ``tallies``, and ``cut_short``: None (counted),
    ``db.TIMED_OUT`` (the planner's estimates) or ``db.CANCELLED`` (no tallies), after
    ``took`` seconds."""

    tallies: list[Tally]
    cut_short: str | None = None
    took: float = 0.0


def tallies_within(
    querysets: Sequence[QuerySet[Any]], seconds: float | None = None
) -> TimedTallies:
    """``tallies`` of ``querysets``, counted within ``seconds`` (``COUNT_SECONDS``) and
    without parallel workers; past the limit the planner's estimates (``db.TIMED_OUT``);
    cut short by an operator (``pg_cancel_backend``) before it, none (``db.CANCELLED``),
    for the caller to give up on. Any other error is raised.

    For the question before a bulk change (``pgjobs retry`` by filter, the admin's
    "Run completed jobs again?"): under a filter no index serves (a task, a date) even
    a capped count reads every row when few match, with no limit (1.6 s at 600,000
    jobs for a rare task; seconds at millions). The change itself is the caller's,
    with no time limit: a bulk write of millions of jobs is what it was asked for."""
    seconds = COUNT_SECONDS if seconds is None else seconds
    if not querysets:
        return TimedTallies([])
    began = time.monotonic()
    try:
        with db.local_settings(
            querysets[0].db,
            # Never 0 ms: that is no limit at all.
            statement_timeout=f"{max(1, round(seconds * 1000))}ms",
            max_parallel_workers_per_gather="0",
        ):
            return TimedTallies(tallies(querysets))
    except OperationalError as error:
        took = time.monotonic() - began
        why = db.cut_short(error, took, seconds)
        if why is None:
            raise
    if why == db.CANCELLED:  # not even an EXPLAIN: it may wait on the same lock
        return TimedTallies([], why, took)
    return TimedTallies([Tally(value, exact=False) for value in estimates(querysets)], why, took)


def _capped_counts(using: str, compiled: dict[int, tuple[str, tuple[Any, ...]]]) -> dict[int, int]:
    """The row count of each of ``compiled`` (capped queries, by position), in one statement."""
    if not compiled:
        return {}
    parts = [f"(SELECT count(*) FROM ({sql}) AS capped)" for sql, _ in compiled.values()]
    params = [param for _, found in compiled.values() for param in found]
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        row = cursor.fetchone()
    return dict(zip(compiled, row, strict=True))


#: A count the planner expects to come out past this many rows (a hundred times
#: COUNT_CAP) is not run at all: the planner's estimate is the tally, shown "≈" as
#: any count past its cap.
#: At ten million jobs, a page's first view counted each finished state up to its cap
#: (10,001 index entries each, 4-15 ms for the three) only to show their estimates, and
#: an empty table's page takes 13-16 ms. A hundred times the cap leaves room for the
#: planner being wrong: a state it puts at a million is not under 10,000 unless the
#: statistics are stale (a table pruned without ANALYZE), and then the tab says "≈",
#: never a wrong exact number. Oban Web estimates its large states the same way.
ESTIMATE_PAST = 100 * COUNT_CAP


def _planned_large(
    querysets: Sequence[QuerySet[Any]], asked: dict[int, tuple[Any, ...] | None], now: float
) -> dict[int, int]:
    """The planner's estimates (by position) of the ``asked`` counts, from one EXPLAIN,
    if any of them could be past ``ESTIMATE_PAST``; else none.

    Only a table the statistics say is that large is asked about (one catalog read, far
    cheaper than the EXPLAIN), and not a count found under it a moment ago; a table
    never analyzed (no statistics) is counted as before."""
    unknown = [i for i, key in asked.items() if key is None or not _under_large_lately(key, now)]
    if not unknown or _table_rows(querysets[0], now) <= ESTIMATE_PAST:
        return {}
    return dict(zip(unknown, estimates([querysets[i] for i in unknown]), strict=True))


def _table_rows(jobs: QuerySet[Any], now: float) -> float:
    """The statistics' row count of ``jobs``'s table (-1 if never analyzed nor vacuumed),
    read at most once per OVER_CAP_SECONDS: a page of a small table pays no round trip."""
    key = (jobs.db, jobs.model._meta.db_table)
    with _over_cap_lock:
        until, rows = _TABLE_ROWS.get(key, (now, -1.0))
    if now < until:
        return rows
    with connections[jobs.db].cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [key[1]])
        row = cursor.fetchone()
    rows = -1.0 if row is None else float(row[0])
    with _over_cap_lock:
        _TABLE_ROWS[key] = (now + OVER_CAP_SECONDS, rows)
    return rows


#: (database alias, table) -> until when (``clock``) its statistics' row count is reused.
_TABLE_ROWS: dict[tuple[str, str], tuple[float, float]] = {}


#: A count that came out past its cap is neither run nor estimated again for this many
#: seconds after: its estimate of then is reused. At ten million jobs, each finished
#: state's capped count read 10,001 index rows (4-5 ms) on every page load, to be
#: replaced by an estimate anyway, and the EXPLAIN of a page's three finished states
#: took 1-1.5 ms more. A state that large seldom drops under the cap within seconds;
#: if it does, the tabs say "≈" a few seconds longer. (Oban Web refreshes its large
#: states less often, too.) Exact counts are never remembered: they are run every time.
OVER_CAP_SECONDS = 5.0

#: At most this many counts are remembered as past their cap (filters make new ones).
MAX_OVER_CAP = 1000

#: (database alias, count's SQL, its parameters) -> until when (``clock``) the count
#: is known to be past its cap, and the planner's estimate of it then.
_OVER_CAP: dict[tuple[Any, ...], tuple[float, int]] = {}
_over_cap_lock = threading.Lock()


def _count_key(using: str, compiled: tuple[str, tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """What identifies a capped count; None for parameters that can't be a key
    (such a count is run every time)."""
    key = (using, compiled[0], tuple(compiled[1]))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _over_cap_lately(key: tuple[Any, ...], now: float) -> int | None:
    """The estimate of a count found past its cap a moment ago; None if it wasn't."""
    with _over_cap_lock:
        found = _OVER_CAP.get(key)
        if found is None:
            return None
        until, estimate = found
        if now < until:
            return estimate
        del _OVER_CAP[key]
        return None


def _remember_over_cap(key: tuple[Any, ...], until: float, estimate: int) -> None:
    with _over_cap_lock:
        if len(_OVER_CAP) >= MAX_OVER_CAP:
            _OVER_CAP.clear()  # they are a few seconds' worth: nothing is lost for long
        _OVER_CAP[key] = (until, estimate)


#: Counts the planner expected under ESTIMATE_PAST -> until when (``clock``)
#: they are run without asking it again (at ten million jobs, the EXPLAIN of a page's
#: rarer states on every load).
_UNDER_LARGE: dict[tuple[Any, ...], float] = {}


def _under_large_lately(key: tuple[Any, ...], now: float) -> bool:
    with _over_cap_lock:
        until = _UNDER_LARGE.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del _UNDER_LARGE[key]
        return False


def _remember_under_large(key: tuple[Any, ...], until: float) -> None:
    with _over_cap_lock:
        if len(_UNDER_LARGE) >= MAX_OVER_CAP:
            _UNDER_LARGE.clear()
        _UNDER_LARGE[key] = until


def forget_over_cap() -> None:
    """Count (or estimate) every tally afresh from its next call."""
    with _over_cap_lock:
        _OVER_CAP.clear()
        _UNDER_LARGE.clear()
        _TABLE_ROWS.clear()


@receiver(setting_changed)
def _forget_over_cap(setting: str, **kwargs: Any) -> None:
    if setting in ("PGJOBS", "DATABASES"):  # the alias may name another database now
        forget_over_cap()


def estimate(jobs: QuerySet[Any]) -> int:
    """The planner's estimate of how many rows ``jobs`` returns."""
    return estimates([jobs])[0]


def estimates(querysets: Sequence[QuerySet[Any]]) -> list[int]:
    """The planner's row estimate of each of ``querysets``, from one EXPLAIN of their
    UNION ALL (each branch's estimate is its own): no row is read."""
    compiled = [_sql(jobs.order_by().values("pk")) for jobs in querysets]
    asked = [each for each in compiled if each is not None]  # the others match nothing
    if not asked:
        return [0] * len(querysets)
    sql = " UNION ALL ".join(f"({part})" for part, _ in asked)
    params = [param for _, found in asked for param in found]
    with connections[querysets[0].db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    branches = [top] if len(asked) == 1 else top.get("Plans", [])
    if len(branches) != len(asked):
        # The planner dropped a branch it proved empty (contradictory filters): ask
        # about each on its own.
        return [estimate(jobs) for jobs in querysets]
    rows = iter(int(branch["Plan Rows"]) for branch in branches)
    return [0 if each is None else next(rows) for each in compiled]


def _sql(jobs: QuerySet[Any]) -> tuple[str, tuple[Any, ...]] | None:
    """The SQL and parameters of ``jobs``; None if Django knows it matches nothing."""
    try:
        return jobs.query.get_compiler(using=jobs.db).as_sql()
    except EmptyResultSet:
        return None


def state_tallies(
    jobs: QuerySet[Job],
    cap: int | None = None,
    *,
    counted: bool = True,
    known: dict[str, Tally] | None = None,
) -> dict[str, Tally]:
    """A tally per job state; each reads an index that holds the state's jobs with
    their queue (claim, executing, state_queue_rest), at most ``cap`` rows.

    ``counted=False``: only the planner's estimates (``state_estimates``), for filters
    no index serves (under which a count of a rare state would read every row of a
    common one). ``known``: tallies of some states the caller has already, not
    counted again.
    """
    if not counted:
        return state_estimates(jobs)
    known = known or {}
    asked = [state for state in JobState if state.value not in known]
    found = tallies([jobs.filter(state=state) for state in asked], cap)
    by_state = {**known, **{state.value: each for state, each in zip(asked, found, strict=True)}}
    return {state.value: by_state[state.value] for state in JobState}


def state_estimates(jobs: QuerySet[Job]) -> dict[str, Tally]:
    """The planner's estimate of ``jobs`` in each state, from one EXPLAIN: its estimate
    of ``jobs``, shared out among the states as it estimates the whole table's.

    That is the planner's own arithmetic for "``jobs`` in state X" (without extended
    statistics it takes a filter and the state as independent), but a filter no index
    serves is planned once, not once per state: a search's eight branches took 2.5 ms
    to plan at ten million jobs, this 1.5 ms, against 0.8 and 0.7 on an empty table.
    """
    table = Job.objects.using(jobs.db)
    asked = [jobs, table, *(table.filter(state=state) for state in JobState)]
    whole, total, *per_state = estimates(asked)
    # At least one, as the planner says of anything it can't prove empty.
    return {
        state.value: Tally(max(1, round(whole * n / total)) if whole and total else 0, exact=False)
        for state, n in zip(JobState, per_state, strict=True)
    }


def queue_depths(now: datetime | None = None, using: str | None = None) -> list[dict[str, Any]]:
    """Each queue's settings, how many of its jobs are in each unfinished state, and
    since when its oldest due job has been waiting (``oldest_available_at``).

    Queues that exist only because jobs name them (no row) are listed too.
    Finished jobs are not counted: they are history, not depth.
    """
    using = using or conf.get("DATABASE")
    now = limits.given_now(now) or timezone.now()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(DEPTH_STATES, 0))
    for queue, state, n in depth_counts(using):
        counts[queue][state] = n
    oldest = oldest_due(now, using)
    rows = {q.name: q for q in Queue.objects.using(using)}
    names = list(rows) + sorted(set(counts) - set(rows))
    return [
        {
            "name": name,
            "paused": rows[name].paused if name in rows else False,
            "blocking": rows[name].blocking if name in rows else False,
            "concurrency": rows[name].concurrency if name in rows else None,
            "depth": counts[name],
            "oldest_available_at": oldest.get(name),
        }
        for name in names
    ]


def depth_counts(using: str | None = None) -> QuerySet[Job]:
    """(queue, state, count) of every unfinished state: one grouped count per index
    that holds some of them by queue (DEPTH_INDEXES), in one query. Grouped over all
    of them at once, PostgreSQL would read the table instead."""
    jobs = Job.objects.using(using or conf.get("DATABASE"))
    grouped = [_by_queue(jobs, states) for states in DEPTH_INDEXES]
    return grouped[0].union(*grouped[1:], all=True).order_by()


def _by_queue(jobs: QuerySet[Job], states: list[str]) -> QuerySet[Job]:
    """(queue, state, count) of the jobs in ``states``. Of a single state, the state is
    written in rather than read: pgjobs_job_executing holds executing jobs by queue
    alone, and reading each one's state from its row cost 450 pages for 1,000 executing
    jobs (1.3-1.8 ms) where the index alone is 4 (0.16 ms) once they are vacuumed."""
    if len(states) == 1:
        of_one = jobs.filter(state=states[0]).values_list("queue")
        return of_one.annotate(in_state=Value(states[0]), n=Count("*"))
    return jobs.filter(state__in=states).values_list("queue", "state").annotate(n=Count("*"))


def oldest_due(now: datetime, using: str | None = None) -> dict[str, datetime]:
    """Since when each queue's oldest due job has waited (queues with none are left out).
    ``now`` is checked as ``queue_depths``'s is (``limits.required_now``)."""
    now = limits.required_now(now)
    return dict(due_jobs(now, using).values_list("queue").annotate(oldest=Min("run_at")).order_by())


def due_jobs(now: datetime, using: str | None = None) -> QuerySet[Job]:
    """Jobs a worker could claim right now: available, or scheduled/retryable and due.

    Their ``run_at`` is when they started waiting for a worker. The filter is the
    claim index's own condition, so ``Min("run_at")`` per queue reads only that
    index (no table rows), even with a large backlog. ``now`` as ``oldest_due``'s.
    """
    now = limits.required_now(now)
    claimable = sorted(str(state) for state in CLAIMABLE)
    return Job.objects.using(using or conf.get("DATABASE")).filter(
        state__in=claimable, run_at__lte=now
    )


#: The dashboard's hour is read in slices of this many seconds (a divisor of 60)...
SLICE_SECONDS = 30

#: ... at most this many finished jobs of each, the first half and the last half:
#: a slice with more is estimated.
PER_SLICE = 15

#: The times of a job's failed attempts (of ``Job.errors``, a list), as a JSON array.
#: Lax and silent: a record that is no object, or has no number for an attempt, is
#: skipped, never an error (no stored row may break the dashboard). Strings only: any
#: other JSON is no time, and some (an integer of 5,000 digits, arrays nested 3,000
#: deep) made ``json.loads`` of the whole list fail, and the dashboard a 500.
FAILURE_TIMES = 'lax $[*] ? (@.attempt >= 1 && @.at.type() == "string").at'


def throughput(
    now: datetime | None = None, minutes: int = 60, using: str | None = None
) -> list[dict[str, Any]]:
    """Jobs completed and attempts failed in each of the last ``minutes`` minutes, oldest first.

    Failed attempts are counted from the jobs' error histories (``Job.errors``), each
    in the minute it failed: a job that failed eight times counts eight, and a job
    that failed and then completed counts as both.

    Finished jobs are read at most PER_SLICE per SLICE_SECONDS (sql/throughput.sql),
    so that the cost stays the same however busy the queue: a slice with more is
    estimated from its first and last jobs, and its minute marked ``approximate``.
    """
    if 60 % SLICE_SECONDS:
        raise ValueError(f"SLICE_SECONDS must divide a minute, not {SLICE_SECONDS}")
    now = limits.given_now(now) or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    params = {
        "start": start,
        "end": end,
        "slice": SLICE_SECONDS,
        "slices": minutes * 60 // SLICE_SECONDS,
        "head": (PER_SLICE + 1) // 2,
        "tail": PER_SLICE // 2,
        "failure_times": FAILURE_TIMES,
    }
    # At ten million jobs the planner sends two parallel workers for the ~2 ms read
    # of the retrying and executing jobs' failures: the chart took 12 ms, 6 of them
    # starting the workers.
    rows = db.fetch_dicts_in_one_process("throughput", params, using)
    completed, failed, approximate = _per_minute(rows, start, minutes)
    return [
        {
            "minute": start + timedelta(minutes=n),
            "completed": round(completed.get(n, 0)),
            "failed": round(failed.get(n, 0)),
            "approximate": n in approximate,
        }
        for n in range(minutes)
    ]


def _per_minute(
    rows: list[dict[str, Any]], start: datetime, minutes: int
) -> tuple[dict[int, float], dict[int, float], set[int]]:
    """Completed jobs and failed attempts per minute (from 0) of sql/throughput.sql's
    rows, and the minutes with an estimate in them."""
    completed: dict[int, float] = {}
    failed: dict[int, float] = defaultdict(float)
    approximate: set[int] = set()
    for row in rows:
        if row["minute"] is not None:
            completed[row["minute"]] = float(row["completed"])
            if row["approximate"]:
                approximate.add(row["minute"])
            continue
        for weight, estimated, per_job in _json(row["failures"]) or ():
            for minute in _minutes(chain.from_iterable(per_job or ()), start, minutes):
                failed[minute] += weight
                if estimated:
                    approximate.add(minute)
    return completed, failed, approximate


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _minutes(times: Iterable[Any], start: datetime, minutes: int) -> Iterator[int]:
    """The minute (counted from ``start``) of each of ``times`` (ISO 8601 texts) within
    ``minutes`` of it; a time without a zone is UTC, and one that is no time is skipped.
    Never an error: 0001-01-01T00:00+14:00, out of range in UTC, is merely long ago."""
    for at in times:
        try:
            moment = datetime.fromisoformat(at)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            minute = (moment - start) // ONE_MINUTE
        except (TypeError, ValueError, OverflowError):
            continue
        if 0 <= minute < minutes:
            yield minute


ONE_MINUTE = timedelta(minutes=1)


def worker_summary(now: datetime | None = None, using: str | None = None) -> dict[str, int]:
    """How many worker rows are alive (recent heartbeat, none from the future:
    ``liveness.alive``) and how many look dead."""
    using = using or conf.get("DATABASE")
    # Heartbeats are stamped by the database: its clock, unless a now is given.
    now = limits.given_now(now) or clocks.database_now(using)
    stale_after = timedelta(seconds=conf.get("WORKER_STALE_AFTER"))
    rows = WorkerProcess.objects.using(using)
    live = rows.filter(liveness.alive(stale_after, now)).count()
    return {"live": live, "stale": rows.count() - live}


def finished_tallies(using: str | None = None, cap: int | None = None) -> dict[str, Tally]:
    """A tally of each finished state (history): exact up to ``cap``, estimated above."""
    jobs = Job.objects.using(using or conf.get("DATABASE"))
    return {
        state.value: tally(jobs.filter(state=state), cap) for state in JobState if state in FINISHED
    }


def workers(now: datetime | None = None, using: str | None = None) -> list[dict[str, Any]]:
    """Every worker row, newest first, with the age of its heartbeat and whether it is alive.

    Its queues and what of it keeps failing are read only within
    ``shown.LISTED_BYTES``, as the admin's list reads them: a row written by SQL may
    hold 255 MB there, and one of 100 MB made ``pgjobs stats`` take 560 MB (71 MB
    now). Those over it are None, and ``not_shown`` says why."""
    # Heartbeats are stamped by the database: its clock, unless a now is given.
    now = limits.given_now(now) or clocks.database_now(using)
    stale_after = timedelta(seconds=conf.get("WORKER_STALE_AFTER"))
    rows = WorkerProcess.objects.using(using or conf.get("DATABASE")).order_by("-started_at", "-pk")
    listed = []
    for row in shown.within(rows, LISTED_WORKER_FIELDS, shown.LISTED_BYTES):
        not_shown = shown.unpack(row, LISTED_WORKER_FIELDS, shown.LISTED_BYTES)
        age = max(0.0, (now - row.heartbeat_at).total_seconds())
        listed.append(
            {
                "id": row.pk,
                "host": row.host,
                "pid": row.pid,
                "queues": row.queues,
                "concurrency": row.concurrency,
                "started_at": row.started_at,
                "heartbeat_at": row.heartbeat_at,
                "heartbeat_age": age,
                "alive": liveness.is_alive(row.heartbeat_at, now, stale_after),
                "stop_requested": row.stop_requested,
                # As read (failing.read): plain values whatever the column holds;
                # None when nothing fails, or when it is not shown.
                "failing": _failing(row.failing),
                "not_shown": not_shown,
            }
        )
    return listed


#: The worker rows' columns that may be large, written by SQL (the others are bounded).
LISTED_WORKER_FIELDS = ("queues", "failing")


def _failing(value: Any) -> list[dict[str, Any]] | None:
    """A worker row's ``failing`` as ``workers`` lists it: its entries as read, the
    first ``failing.MOST_WRITTEN`` (as many as a worker writes)."""
    entries = failing.read(value).entries[: failing.MOST_WRITTEN]
    return [entry.as_dict() for entry in entries] or None
