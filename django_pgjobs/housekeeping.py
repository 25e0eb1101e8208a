"""Running ``maintenance`` on a timetable from the scheduler, once per interval.

Each routine has a row in ``Routine``. A scheduler runs a routine only after
moving that row's ``next_run_at`` forward with a compare-and-set UPDATE, so
with several schedulers each routine still runs once per interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.db.models import Count, Min, Q

from . import conf, limits, maintenance, ratelimits, schedules
from .models import Routine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutineSpec:
    name: str
    interval: timedelta
    #: Does the work at the given instant; returns how many rows it changed.
    action: Callable[[datetime], int]


def prune(now: datetime) -> int:
    """Delete finished jobs and fired-tick records older than ``PRUNE_AFTER``, and the
    windows of rate limits that no start lies in any more; cancel the waiting jobs
    that nothing can release (``maintenance.cancel_stranded``)."""
    return sum(pruned(now, timedelta(seconds=conf.get("PRUNE_AFTER"))).values())


def pruned(now: datetime, older_than: timedelta) -> dict[str, int]:
    """The prune routine with its own ``older_than``, each part's count by name; the
    scheduler's routine and ``manage.py pgjobs prune`` both run this."""
    now = limits.required_now(now)
    return {
        "jobs": maintenance.prune_finished(now, older_than),
        "ticks": schedules.prune_ticks(now, older_than),
        "rate_windows": ratelimits.prune(now, conf.get("DATABASE")),
        "stranded": maintenance.cancel_stranded(now),
    }


def rescue(now: datetime) -> int:
    """Return jobs held by dead workers (workers do this too; hosts with only
    ``runworker --burst`` have no long-running worker to do it)."""
    return maintenance.rescue_orphaned(now)


def configured_routines() -> list[RoutineSpec]:
    routines = [RoutineSpec("rescue", timedelta(seconds=conf.get("RESCUE_INTERVAL")), rescue)]
    if conf.get("PRUNE_INTERVAL") is not None:
        routines.append(RoutineSpec("prune", timedelta(seconds=conf.get("PRUNE_INTERVAL")), prune))
    return routines


def claim(routine: RoutineSpec, now: datetime, using: str) -> bool:
    """Take this interval's run of ``routine``; False if it isn't due or another took it."""
    Routine.objects.using(using).bulk_create(
        [Routine(name=routine.name, next_run_at=now)], ignore_conflicts=True
    )
    due = Q(next_run_at__lte=now) | Q(next_run_at__gt=now + routine.interval)  # interval cut
    return (
        Routine.objects.using(using)
        .filter(due, name=routine.name)
        .update(next_run_at=now + routine.interval, last_run_at=now)
        == 1
    )


def run_due(routines: list[RoutineSpec], now: datetime, using: str) -> dict[str, int]:
    """Run each routine this scheduler claims; returns rows changed per routine run.

    A routine that fails is logged and recorded; the others still run.
    """
    done: dict[str, int] = {}
    for routine in routines:
        if not claim(routine, now, using):
            continue
        try:
            count = routine.action(now)
        except DatabaseError:
            raise  # the connection may be gone: let the loop reconnect
        except Exception as error:
            logger.exception("maintenance routine %r failed", routine.name)
            result = f"failed: {type(error).__name__}: {error}"[:255]
        else:
            done[routine.name] = count
            result = f"{count} row(s)"
            if count:
                logger.info("maintenance %s: %s", routine.name, result)
        Routine.objects.using(using).filter(name=routine.name).update(last_result=result)
    return done


def next_due_at(routines: list[RoutineSpec], now: datetime, using: str) -> datetime | None:
    """When the earliest of ``routines`` is next due (``now`` for one never run)."""
    if not routines:
        return None
    names = [routine.name for routine in routines]
    rows = Routine.objects.using(using).filter(name__in=names)
    found = rows.aggregate(at=Min("next_run_at"), known=Count("name"))
    return now if found["known"] < len(names) else found["at"]
