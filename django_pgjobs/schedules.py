"""Schedules in the database: validating them, syncing those declared in settings,
and firing a due tick exactly once.

Exactly once rests on the database, not on timing: a scheduler fires a schedule
while holding its row lock (others skip it), and records the tick in
``ScheduleTick``, whose unique (schedule, fire_at) refuses a second firing of
the same tick in any case. The job is enqueued in the same transaction, so a
tick and its job exist together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Min, Q
from django.utils import timezone

from . import conf, limits, payload, queues
from .cron import Cron, InvalidCron, UnknownTimezone, plan
from .exceptions import InvalidOption, InvalidQueueName, PayloadError, PgJobsError, UnknownTask
from .models import MISFIRE_CHOICES, Job, Schedule, ScheduleTick
from .tasks import get_task

logger = logging.getLogger(__name__)

#: Payload: the schedule's id. Sent on commit when a schedule is created, deleted
#: or edited (not when a scheduler records a tick).
SCHEDULES_CHANNEL = "pgjobs_schedules"

#: Keys a schedule declared in ``PGJOBS["SCHEDULES"]`` may have.
DECLARED_OPTIONS = frozenset(
    {"cron", "task", "timezone", "args", "kwargs", "queue", "priority", "enabled", "misfire"}
)
REQUIRED_OPTIONS = frozenset({"cron", "task"})


# -- validation (Schedule.clean/save use these) -------------------------------------------


def check_timing_fields(schedule: Schedule) -> None:
    """What the scheduler can't work without; raises ValidationError naming the field."""
    errors: dict[str, str] = {}
    try:
        Cron.parse(schedule.cron, "UTC")
    except InvalidCron as error:
        errors["cron"] = str(error)
    try:
        Cron.parse("* * * * *", schedule.timezone)
    except UnknownTimezone as error:
        errors["timezone"] = str(error)
    if schedule.misfire not in {value for value, _ in MISFIRE_CHOICES}:
        errors["misfire"] = f"misfire must be one of {[v for v, _ in MISFIRE_CHOICES]}"
    if errors:
        raise ValidationError(errors)


def check_storable_fields(schedule: Schedule) -> None:
    """What the table can't hold, or a scheduler could not read back or enqueue: text
    with a NUL or a lone surrogate, a name too long, arguments that are no JSON list
    and object, a priority beyond a smallint. Raises ValidationError per field;
    ``save()`` checks this, so the database never has to refuse it with an error."""
    errors: dict[str, str] = {}
    for field, length in (("name", 200), ("task", 255), ("cron", 100), ("timezone", 63)):
        try:
            limits.text(getattr(schedule, field), field, length)
        except InvalidOption as error:
            errors[field] = f"{field} {error.problem}"
    if schedule.queue:
        try:
            queues.validate_name(schedule.queue)
        except InvalidQueueName as error:
            errors["queue"] = str(error)
    if schedule.priority is not None:
        try:
            limits.priority(schedule.priority)
        except InvalidOption as error:
            errors["priority"] = str(error)
    for name, kind, example in (("args", list, "[42]"), ("kwargs", dict, '{"user_id": 42}')):
        if problem := payload.shaped_problem(getattr(schedule, name), name, kind, example):
            errors[name] = problem
    if errors:
        raise ValidationError(errors)


def check_job_fields(schedule: Schedule, *, offline: bool = False) -> None:
    """That the job a tick enqueues would be accepted; raises ValidationError per field.

    ``offline`` checks the queue's name but not that it exists (no database query).
    """
    errors: dict[str, str] = {}
    try:
        get_task(schedule.task)
    except UnknownTask as error:
        errors["task"] = str(error)
    if schedule.queue:
        try:
            (queues.validate_name if offline else queues.check_known)(schedule.queue)
        except (PgJobsError, ValueError) as error:
            errors["queue"] = str(error)
    if not isinstance(schedule.args, list):
        errors["args"] = "args must be a JSON list, e.g. [42]"
    elif problem := _payload_problem(schedule.args, {}):
        errors["args"] = problem
    if not isinstance(schedule.kwargs, dict):
        errors["kwargs"] = 'kwargs must be a JSON object, e.g. {"user_id": 42}'
    elif problem := _payload_problem([], schedule.kwargs):
        errors["kwargs"] = problem
    if not errors and (problem := _payload_problem(schedule.args, schedule.kwargs)):
        errors[NON_FIELD_ERRORS] = problem
    if errors:
        raise ValidationError(errors)


def _payload_problem(args: Any, kwargs: Any) -> str | None:
    try:
        payload.check(args, kwargs, conf.get("MAX_PAYLOAD_BYTES"))
    except PayloadError as error:
        return str(error)
    return None


# -- schedules declared in settings -----------------------------------------------------


def declared_schedule(name: str, options: dict[str, Any], *, offline: bool = False) -> Schedule:
    """The unsaved, validated Schedule for one ``PGJOBS["SCHEDULES"]`` entry.

    ``offline`` (system checks) skips what needs the database.
    """
    if not isinstance(options, dict):
        raise ImproperlyConfigured(f"PGJOBS['SCHEDULES'][{name!r}] must be a dict")
    unknown = set(options) - DECLARED_OPTIONS
    missing = REQUIRED_OPTIONS - set(options)
    if unknown or missing:
        raise ImproperlyConfigured(
            f"PGJOBS['SCHEDULES'][{name!r}]: "
            + (f"unknown option(s) {sorted(unknown)}; " if unknown else "")
            + (f"missing {sorted(missing)}; " if missing else "")
            + f"known options: {sorted(DECLARED_OPTIONS)}"
        )
    schedule = Schedule(name=name, **options)
    problems: dict[str, list[str]] = {}
    for check in (schedule.clean_fields, lambda: check_job_fields(schedule, offline=offline)):
        try:
            check()
        except ValidationError as error:
            problems.update(error.message_dict)
    if problems:
        described = "; ".join(f"{field}: {' '.join(texts)}" for field, texts in problems.items())
        raise ImproperlyConfigured(f"PGJOBS['SCHEDULES'][{name!r}] is invalid: {described}")
    return schedule


def sync_from_settings(using: str | None = None) -> list[str]:
    """Create the rows of settings-declared schedules that don't exist yet.

    The database wins: a row that exists is never changed from settings, so
    edits made in the admin survive deploys. A declared entry that differs from
    its row is logged. Returns the names created.
    """
    using = using or conf.get("DATABASE")
    declared = {
        name: declared_schedule(name, options) for name, options in conf.get("SCHEDULES").items()
    }
    existing = {
        row.name: row for row in Schedule.objects.using(using).filter(name__in=list(declared))
    }
    for name, row in existing.items():
        changed = _differences(declared[name], row)
        if changed:
            logger.warning(
                "schedule %r in PGJOBS['SCHEDULES'] differs from its row in %s; the database "
                "wins (edit it in the admin, or delete the row to re-create it from settings)",
                name,
                changed,
            )
    missing = [schedule for name, schedule in declared.items() if name not in existing]
    Schedule.objects.using(using).bulk_create(missing, ignore_conflicts=True)
    return [schedule.name for schedule in missing]


def _differences(declared: Schedule, row: Schedule) -> list[str]:
    fields = ("cron", "timezone", "task", "args", "kwargs", "queue", "priority", "misfire")
    return [field for field in fields if getattr(declared, field) != getattr(row, field)]


# -- firing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    """What one scheduler did for one due schedule."""

    schedule: str
    #: The tick fired; None if it was dropped (misfire="skip") or had fired already.
    fire_at: datetime | None
    next_fire_at: datetime
    job_id: int | None = None
    missed: int = 0
    error: str = ""


class InvalidSchedule(PgJobsError, ValueError):
    """A stored schedule whose cron or timezone no longer parses (written around save())."""


def next_due_at(using: str) -> datetime | None:
    """The earliest planned tick of any enabled schedule."""
    return (
        Schedule.objects.using(using).filter(enabled=True).aggregate(at=Min("next_fire_at"))["at"]
    )


def fire_due(
    now: datetime, *, using: str, grace: timedelta, batch_size: int = 100
) -> tuple[list[Fired], list[InvalidSchedule]]:
    """Fire every schedule due at ``now``: enabled, with a tick at or before ``now`` or
    none planned yet. Returns what fired and the rows too broken to plan.

    Schedules are locked and fired ``batch_size`` at a time in one transaction (one
    commit for many ticks); each in a savepoint, so one failing undoes no other.
    Rows another scheduler holds are skipped, not waited for.
    """
    fired: list[Fired] = []
    broken: list[InvalidSchedule] = []
    seen: list[int] = []  # broken rows stay due; don't pick them up twice
    while True:
        with transaction.atomic(using=using):
            batch = list(
                Schedule.objects.using(using)
                .select_for_update(skip_locked=True)
                .filter(enabled=True)
                .filter(Q(next_fire_at__lte=now) | Q(next_fire_at__isnull=True))
                .exclude(pk__in=seen)
                .order_by("next_fire_at", "pk")[:batch_size]
            )
            for schedule in batch:
                seen.append(schedule.pk)
                try:
                    with transaction.atomic(using=using):
                        result = fire(schedule, now, using=using, grace=grace)
                except InvalidSchedule as error:
                    broken.append(error)
                    continue
                except (OperationalError, InterfaceError):
                    raise  # the connection is gone: the loop retries
                except Exception as error:  # a row no scheduler can use: not the others' fault
                    what = f"{type(error).__name__}: {error}"
                    broken.append(InvalidSchedule(f"schedule {schedule.name!r}: {what}"))
                    continue
                if result is not None:
                    fired.append(result)
        if len(batch) < batch_size:
            return fired, broken


def fire(schedule: Schedule, now: datetime, *, using: str, grace: timedelta) -> Fired | None:
    """Fire the due tick of ``schedule``, whose row the caller holds locked.

    None when nothing was due: the schedule was only planned (new or edited), or
    another scheduler fired it since it was read.
    """
    try:
        cron = schedule.cron_schedule()
    except (InvalidCron, UnknownTimezone) as error:
        raise InvalidSchedule(f"schedule {schedule.name!r}: {error}") from None
    decision = plan(cron, schedule.next_fire_at, now, schedule.misfire, grace)
    rows = Schedule.objects.using(using).filter(pk=schedule.pk)
    if decision.fire_at is None and not decision.missed:
        if decision.next_fire_at != schedule.next_fire_at:
            rows.update(next_fire_at=decision.next_fire_at)  # first plan after a create or edit
        return None
    fired = Fired(schedule.name, decision.fire_at, decision.next_fire_at, None, decision.missed)
    if decision.fire_at is not None:
        fired = replace(fired, **_fire_tick(schedule, decision.fire_at, now, using))
    updates: dict[str, Any] = {"next_fire_at": decision.next_fire_at}
    if fired.fire_at is not None:
        updates["last_fire_at"] = fired.fire_at
    rows.update(**updates)
    return fired


def _fire_tick(schedule: Schedule, fire_at: datetime, now: datetime, using: str) -> dict:
    """Record the tick and enqueue its job; returns what to change in the Fired report."""
    try:
        with transaction.atomic(using=using):
            tick = ScheduleTick.objects.using(using).create(
                schedule=schedule, fire_at=fire_at, fired_at=now
            )
    except IntegrityError:
        # This tick fired before (its next_fire_at was set back by hand, say).
        return {"fire_at": None}
    try:
        with transaction.atomic(using=using):
            job = Job.enqueue(
                schedule.task,
                args=schedule.args,
                kwargs=schedule.kwargs,
                queue=schedule.queue or None,
                priority=schedule.priority,
                # Due when the tick fired, by the scheduler's clock (the database's),
                # not by this host's: a fast host would make it wait.
                run_at=now,
                meta={"schedule": schedule.name, "fire_at": fire_at.isoformat()},
            )
    except (OperationalError, InterfaceError):
        raise  # the connection is gone: the whole tick rolls back and is retried
    except Exception as error:
        # The task was removed, its queue deleted, ...: record the tick as fired
        # with the reason, rather than retrying a broken schedule every loop.
        tick.error = f"{type(error).__name__}: {error}"
        tick.save(update_fields=["error"])
        logger.error("schedule %r: tick %s enqueued nothing: %s", schedule.name, fire_at, error)
        return {"error": tick.error}
    tick.job_id = job.pk
    tick.save(update_fields=["job"])
    return {"job_id": job.pk}


def prune_ticks(now: datetime, older_than: timedelta, using: str | None = None) -> int:
    """Delete the records of ticks fired more than ``older_than`` ago."""
    using = using or conf.get("DATABASE")
    deleted, _ = ScheduleTick.objects.using(using).filter(fired_at__lt=now - older_than).delete()
    return deleted


def fire_times(schedule: Schedule, now: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times after ``now``, on the schedule's own clock;
    [] for a row whose cron or timezone no longer parses.

    Computed from the expression, not read from ``next_fire_at``, so a schedule
    no scheduler has planned yet (or a disabled one) shows them too.
    """
    try:
        zone = schedule.cron_schedule().zone
        return [instant.astimezone(zone) for instant in schedule.upcoming(count, after=now)]
    except (InvalidCron, UnknownTimezone):
        return []


# -- operator actions (admin, commands) ---------------------------------------------------


def set_enabled(schedule_ids: Iterable[int], enabled: bool, using: str | None = None) -> int:
    """Enable or disable schedules; returns how many changed.

    The schedule table's triggers replan a re-enabled schedule from the first
    tick after now (missed ticks don't fire) and wake the schedulers.
    """
    rows = Schedule.objects.using(using or conf.get("DATABASE")).filter(pk__in=list(schedule_ids))
    return rows.exclude(enabled=enabled).update(enabled=enabled)


def run_now(schedule: Schedule, now: datetime | None = None) -> Job:
    """Enqueue the schedule's job at once, outside its cron ticks.

    No tick is recorded and the next tick is unchanged: this is an extra run.
    Raises what ``Job.enqueue`` raises (the task or queue is gone) and enqueues
    nothing then.
    """
    now = now or timezone.now()
    return Job.enqueue(
        schedule.task,
        args=schedule.args,
        kwargs=schedule.kwargs,
        queue=schedule.queue or None,
        priority=schedule.priority,
        meta={"schedule": schedule.name, "run_now": now.isoformat()},
    )
