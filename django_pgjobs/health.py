"""Health checks for probes and monitoring: database, this host's workers, queue ages, cron,
and (pruning off) the waiting jobs that can never run.

Each check reads what the workers and schedulers write anyway (heartbeats,
``next_fire_at``) and what the dashboard counts (the claim index), so a probe
every few seconds costs the database next to nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections
from django.db.models import Q

from . import clocks, conf, cron, failing, limits, liveness, logs, maintenance, probes, shown, stats
from .models import Queue, Schedule, SchedulerProcess, WorkerProcess
from .scheduler import STALE_AFTER as SCHEDULER_STALE_AFTER

#: How late a planned cron tick may be before the scheduler counts as lagging.
DEFAULT_SCHEDULER_LAG = timedelta(seconds=60)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(
    now: datetime | None = None,
    *,
    host: str | None = None,
    require_worker: bool = False,
    stale_after: timedelta | None = None,
    max_age: timedelta | None = None,
    queues: Iterable[str] = (),
    scheduler_lag: timedelta | None = DEFAULT_SCHEDULER_LAG,
    stranded: bool | None = None,
    using: str | None = None,
) -> list[Check]:
    """Every check asked for; healthy when all are ``ok``.

    - database: it answers;
    - workers: no worker of ``host`` (default: this one) has a stale heartbeat, none
      says its loop's passes or a queue's claims have kept failing for more than
      ``probes.FAILING_AFTER`` (its row's ``failing``), and with ``require_worker``
      at least one is alive;
    - queue <name>: (with ``max_age``) no due job of an unpaused queue has waited longer;
    - scheduler: (unless ``scheduler_lag`` is None) no enabled schedule's planned
      tick is later than that;
    - stranded: (with ``stranded``; by default when ``PRUNE_INTERVAL`` is None) no
      waiting job is one that nothing can release.

    A ``host`` no worker row can record (``limits.host_name``: empty, unprintable, a
    lone surrogate) is ``InvalidOption``, checking nothing.
    """
    if host is not None:  # no worker records another: psycopg raised on a lone surrogate
        limits.host_name(host, "host")
    using = using or conf.get("DATABASE")
    database = check_database(using)
    if not database.ok:
        return [database]
    now = now or clocks.database_now(using)  # heartbeats are stamped by the database
    checks = [database]
    checks.append(
        check_workers(
            now,
            host or conf.host_name(),
            require=require_worker,
            stale_after=stale_after,
            using=using,
        )
    )
    if max_age is not None:
        checks += check_queue_ages(now, max_age, queues, using)
    if scheduler_lag is not None:
        checks.append(check_scheduler(now, scheduler_lag, using))
    if conf.get("PRUNE_INTERVAL") is None if stranded is None else stranded:
        # With pruning on, its pass cancels them (and logs each): failing until then
        # would page someone for what fixes itself.
        checks.append(check_stranded(using))
    return checks


def check_database(using: str) -> Check:
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        return Check("database", False, f"unreachable: {first_line}")
    return Check("database", True, "answers")


def check_workers(
    now: datetime,
    host: str,
    *,
    require: bool = False,
    stale_after: timedelta | None = None,
    using: str | None = None,
) -> Check:
    """No worker row of ``host`` is stale, unless a worker started on it since
    (a process that crashed and was restarted leaves a row until rescue removes it),
    and no live one says something of it has kept failing for more than
    ``probes.FAILING_AFTER`` (``_failing``)."""
    stale_after = stale_after or timedelta(seconds=conf.get("WORKER_STALE_AFTER"))
    limits.before(now, stale_after, "stale_after")  # InvalidOption, not OverflowError
    rows = list(
        WorkerProcess.objects.using(using or conf.get("DATABASE"))
        .filter(host=host)
        .values("pk", "pid", "started_at", "heartbeat_at")
    )
    # Not one from the future either (``liveness.alive``): no live worker's is.
    fresh = [row for row in rows if liveness.is_alive(row["heartbeat_at"], now, stale_after)]
    stale = [
        row
        for row in rows
        if row not in fresh
        and not any(
            other["pk"] != row["pk"] and other["started_at"] > row["heartbeat_at"] for other in rows
        )
    ]
    if stale:
        worst = min(stale, key=lambda row: row["heartbeat_at"])
        return Check(
            "workers",
            False,
            f"worker {worst['pk']} (pid {worst['pid']}) on {host} last heartbeat "
            f"{_ago(now, worst['heartbeat_at'])} (stale after "
            f"{stale_after.total_seconds():.0f}s)",
        )
    failing_now = _failing(now, fresh, host, using or conf.get("DATABASE"))
    if failing_now:
        return Check("workers", False, failing_now)
    if not fresh:  # "0 alive" read as one more line of "ok": said in words
        if require:
            return Check("workers", False, f"no worker is running on {host}")
        return Check(
            "workers",
            True,
            f"no worker is alive on {host} (not required: with --require-worker this fails)",
        )
    return Check("workers", True, f"{len(fresh)} alive on {host}")


#: How many entries of a worker's ``failing`` the workers check says (then "and N more").
FAILING_SAID = 3


def _failing(now: datetime, fresh: list[dict[str, Any]], host: str, using: str) -> str:
    """What the live workers of ``host`` say has kept failing for more than
    ``probes.FAILING_AFTER`` (their ``failing`` column, which their heartbeat writes,
    read within ``shown.LISTED_BYTES``: a larger one, written by SQL, is no worker's),
    as "worker 3 on web-1: queue 'mail' claims failing since 14:02:17 UTC (24
    failures, DataError); see its log"; "" when none does."""
    if not fresh:
        return ""
    rows = WorkerProcess.objects.using(using).filter(pk__in=[row["pk"] for row in fresh])
    rows = shown.within(rows.only("pk").order_by("pk"), ("failing",), shown.LISTED_BYTES)
    said = []
    for row in rows:
        shown.unpack(row, ("failing",), shown.LISTED_BYTES)
        entries = failing.read(row.failing)
        found = failing.longer_than(entries, probes.FAILING_AFTER, now)
        if found:
            what = failing.said_all(found, FAILING_SAID, now=now)
            said.append(f"worker {row.pk} on {logs.printable(host)}: {what}; see its log")
    return "; ".join(said)


def _ago(now: datetime, heartbeat_at: datetime) -> str:
    """ "75s ago", or for a heartbeat ahead of ``now`` (written by SQL: no live process
    stamps one), "3600s ahead of the database's clock"."""
    try:
        age = (now - heartbeat_at).total_seconds()
    except OverflowError:  # pragma: no cover - both are datetimes of years 1 to 9999
        return "at an unreadable time"
    if age < 0:
        return f"{-age:.0f}s ahead of the database's clock"
    return f"{age:.0f}s ago"


def check_queue_ages(
    now: datetime, max_age: timedelta, queues: Iterable[str] = (), using: str | None = None
) -> list[Check]:
    """A check per unpaused queue (or per one of ``queues``): its oldest due job's wait."""
    using = using or conf.get("DATABASE")
    oldest = stats.oldest_due(now, using)
    paused = set(Queue.objects.using(using).filter(paused=True).values_list("name", flat=True))
    names = sorted(set(queues) or (set(oldest) | known_queue_names(using)))
    checks = []
    for name in names:
        if name in paused:
            checks.append(Check(f"queue {name}", True, "paused"))
            continue
        since = oldest.get(name)
        limit = f"(limit {max_age.total_seconds():.0f}s)"
        if since is None:  # "oldest due job waiting 0s" named a job there isn't
            checks.append(Check(f"queue {name}", True, f"no due job {limit}"))
            continue
        waited = max(timedelta(0), now - since)
        checks.append(
            Check(
                f"queue {name}",
                waited <= max_age,
                f"oldest due job waiting {waited.total_seconds():.0f}s {limit}",
            )
        )
    return checks


#: How many of the jobs that can never run the stranded check names.
STRANDED_SHOWN = 3


def check_stranded(using: str | None = None) -> Check:
    """The waiting jobs the prune pass would cancel (a dependency missing or finished
    without releasing them, a count that can't reach zero, a cycle): the first few
    named, with why. Off with pruning, nothing else says they will never run."""
    found = maintenance.find_stranded(STRANDED_SHOWN, using or conf.get("DATABASE"))
    # Waiting jobs written to make the search walk far stop it: say it may miss some.
    cut = (
        f"; the search for cycles stopped after {maintenance.CYCLE_WALK_CAP} steps"
        if found.search_cut
        else ""
    )
    if not found.total:
        return Check("stranded", True, f"no waiting job that can never run{cut}")
    named = "; ".join(
        f"job {row['id']} ({logs.printable(row['task'])}): {row['error']}" for row in found.first
    )
    left = found.total - len(found.first)
    more = f"; and {left} more" if left else ""
    what = "job" if found.total == 1 else "jobs"
    return Check(
        "stranded",
        False,
        f"{found.total} waiting {what} can never run: {named}{more}{cut} ({_cure()})",
    )


def _cure() -> str:
    """What cancels them: ``manage.py pgjobs prune``, or the prune pass that is on."""
    interval = conf.get("PRUNE_INTERVAL")
    if interval is None:
        return "pruning is off, PRUNE_INTERVAL is None: manage.py pgjobs prune cancels them"
    return f"the scheduler's prune pass cancels them, every {interval:g}s"


def known_queue_names(using: str) -> set[str]:
    return set(conf.get("QUEUES")) | set(Queue.objects.using(using).values_list("name", flat=True))


def check_scheduler(now: datetime, max_lag: timedelta, using: str | None = None) -> Check:
    """The most overdue enabled schedule (``overdue_schedule``), and the likely cause,
    from what the database knows (``late_cause``)."""
    using = using or conf.get("DATABASE")
    overdue = overdue_schedule(now, max_lag, using)
    if overdue is None:
        return Check("scheduler", True, f"no tick more than {max_lag.total_seconds():.0f}s late")
    cause = late_cause(overdue, now, using)
    return Check("scheduler", False, f"{lateness(overdue, now, max_lag)}: {cause}")


def overdue_schedule(now: datetime, max_lag: timedelta, using: str) -> dict[str, Any] | None:
    """The enabled schedule with a tick planned before ``now - max_lag`` that no
    scheduler has fired, or that no scheduler has planned in that long, the most
    overdue: its name, next_fire_at, updated_at, cron and timezone; or None."""
    late_before = limits.before(now, max_lag, "max_lag")  # not OverflowError
    return (
        Schedule.objects.using(using)
        .filter(enabled=True)
        .filter(
            Q(next_fire_at__lt=late_before)
            | Q(next_fire_at__isnull=True, updated_at__lt=late_before)
        )
        .order_by("next_fire_at", "updated_at")
        .values("name", "next_fire_at", "updated_at", "cron", "timezone")
        .first()
    )


def lateness(overdue: dict[str, Any], now: datetime, max_lag: timedelta) -> str:
    """How late ``overdue`` is: "schedule 'nightly' is 180s late (limit 60s)"."""
    limit = f"(limit {max_lag.total_seconds():.0f}s)"
    if overdue["next_fire_at"] is None:
        return f"schedule {overdue['name']!r} has not been planned by any scheduler {limit}"
    lag = (now - overdue["next_fire_at"]).total_seconds()
    return f"schedule {overdue['name']!r} is {lag:.0f}s late {limit}"


def late_cause(overdue: dict[str, Any], now: datetime, using: str) -> str:
    """Why ``overdue`` (a schedule's name, cron and timezone) is likely late: a cron or
    timezone no scheduler can plan (written by SQL), no scheduler running, none that
    passed lately, or one that runs and still has not fired it."""
    try:
        cron.timing(overdue["cron"], overdue["timezone"])
    except Exception as error:  # whatever the row holds: the check must still answer
        return f"no scheduler can plan it: {logs.one_line(str(error))}"
    rows = SchedulerProcess.objects.using(using).order_by("-heartbeat_at")
    fields = ("host", "pid", "heartbeat_at")
    # A row ahead of the database's clock (written by SQL: none of a running scheduler
    # is) is no scheduler's (liveness.alive): it said one ran, for ever.
    last = rows.filter(liveness.alive(SCHEDULER_STALE_AFTER, now)).values(*fields).first()
    stale_before = now - SCHEDULER_STALE_AFTER
    if last is None:
        last = rows.filter(heartbeat_at__lt=stale_before).values(*fields).first()
    if last is None:
        return "no scheduler is running (no runscheduler has a row in Scheduler processes)"
    ago = f"{max(0.0, (now - last['heartbeat_at']).total_seconds()):.0f}s ago"
    if last["heartbeat_at"] < stale_before:
        return (
            f"no scheduler has passed in {SCHEDULER_STALE_AFTER.total_seconds():.0f}s: the "
            f"last, on {last['host']!r} (pid {last['pid']}), {ago}"
        )
    return (
        f"a scheduler runs (on {last['host']!r}, pid {last['pid']}, passed {ago}) but has "
        "not fired it; see its log"
    )
