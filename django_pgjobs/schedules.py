"""Schedules in the database: validating them, syncing those declared in settings,
and firing a due tick exactly once.

Exactly once rests on the database, not on timing: a scheduler fires a schedule
while holding its row lock (others skip it), and records the tick in
``ScheduleTick``, whose unique (schedule, fire_at) refuses a second firing of
the same tick in any case. The job is enqueued in the same transaction, so a
tick and its job exist together or not at all.

Each tick's job obeys the schedule's overlap policy (``allow``, ``skip``, ``queue``,
judged by the state of ``last_job``) and is due ``cron.jitter_delay`` after its tick.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.db import IntegrityError, connections, transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone

from . import conf, db, limits, payload, queues, shown
from .cron import InvalidCron, Timing, UnknownTimezone, jitter_delay, parse_timezone, plan, timing
from .exceptions import InvalidOption, InvalidQueueName, PayloadError, PgJobsError, UnknownTask
from .models import (
    CATCH_UP_CHOICES,
    MAX_CATCH_UP_LIMIT,
    MAX_CATCH_UP_WINDOW,
    MAX_JITTER,
    OVERLAP_CHOICES,
    Job,
    Schedule,
    ScheduleTick,
    unread_fields,
)
from .states import FINISHED, JobState
from .tasks import Task, get_task

logger = logging.getLogger(__name__)

#: Payload: the schedule's id. Sent on commit when a schedule is created, deleted
#: or edited (not when a scheduler records a tick).
SCHEDULES_CHANNEL = "pgjobs_schedules"

#: Keys a schedule declared in ``PGJOBS["SCHEDULES"]`` may have.
DECLARED_OPTIONS = frozenset(
    {"cron", "task", "timezone", "args", "kwargs", "queue", "priority", "enabled"}
    | {"jitter", "overlap", "catch_up", "catch_up_window", "catch_up_limit"}
)
REQUIRED_OPTIONS = frozenset({"cron", "task"})
#: Options of earlier versions, and what replaced them.
RENAMED_OPTIONS = {
    "misfire": "'misfire' is now 'catch_up': 'catch_up' became 'latest', 'skip' became 'none'"
}
#: The policy fields: (name, lowest, highest, whether it may be None).
POLICY_NUMBERS = (
    ("jitter", 0, MAX_JITTER, False),
    ("catch_up_window", 1, MAX_CATCH_UP_WINDOW, True),
    ("catch_up_limit", 1, MAX_CATCH_UP_LIMIT, False),
)


# -- validation (Schedule.clean/save use these) -------------------------------------------


def check_timing_fields(schedule: Schedule) -> None:
    """What the scheduler can't work without: its expression, timezone and policies.
    Raises ValidationError naming each field."""
    errors: dict[str, str] = {}
    try:
        timing(schedule.cron, "UTC")
    except InvalidCron as error:
        errors["cron"] = str(error)
    try:
        parse_timezone(schedule.timezone)
    except UnknownTimezone as error:
        errors["timezone"] = str(error)
    try:
        check_policy_fields(schedule)
    except ValidationError as error:
        errors.update({field: " ".join(texts) for field, texts in error.message_dict.items()})
    if errors:
        raise ValidationError(errors)


def check_policy_fields(schedule: Schedule) -> None:
    """The overlap and catch-up policies and the jitter, as they are: choices, and whole
    numbers in range (no float, bool or text that Django's fields would round or read).
    Raises ValidationError naming each field."""
    errors: dict[str, str] = {}
    for field, choices in (("catch_up", CATCH_UP_CHOICES), ("overlap", OVERLAP_CHOICES)):
        allowed = [value for value, _ in choices]
        if not isinstance(getattr(schedule, field), str) or getattr(schedule, field) not in allowed:
            errors[field] = (
                f"{field} must be one of {allowed}, not {limits.shown(getattr(schedule, field))}"
            )
    for field, low, high, nullable in POLICY_NUMBERS:
        value = getattr(schedule, field)
        if value is None and nullable:
            continue
        try:
            limits.whole_number(value, field, low, high)
        except InvalidOption as error:
            errors[field] = str(error) + (" (or empty: no limit)" if nullable else "")
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
    registered = None
    try:
        # Written by staff or settings, who may see every task's name.
        registered = get_task(schedule.task, suggest=True)
    except UnknownTask as error:
        errors["task"] = str(error)
    if schedule.queue:
        try:
            (queues.validate_name if offline else queues.check_known)(schedule.queue)
        except (PgJobsError, ValueError) as error:
            errors["queue"] = str(error)
    unread = unread_fields(schedule)  # too large to read: kept as stored, checked by ticks
    if "args" in unread:
        pass
    elif not isinstance(schedule.args, list):
        errors["args"] = "args must be a JSON list, e.g. [42]"
    elif problem := _payload_problem(schedule.args, {}):
        errors["args"] = problem
    if "kwargs" in unread:
        pass
    elif not isinstance(schedule.kwargs, dict):
        errors["kwargs"] = 'kwargs must be a JSON object, e.g. {"user_id": 42}'
    elif problem := _payload_problem([], schedule.kwargs):
        errors["kwargs"] = problem
    if not errors and not unread:
        if problem := _payload_problem(schedule.args, schedule.kwargs):
            errors[NON_FIELD_ERRORS] = problem
        elif registered is not None:
            try:  # what enqueue checks of the arguments: the same words, on args or kwargs
                _check_arguments(registered, schedule.args, schedule.kwargs)
            except PayloadError as error:
                field = "kwargs" if (error.field or "").startswith("kwargs") else "args"
                errors[field] = str(error)
    if errors:
        raise ValidationError(errors)


def _check_arguments(registered: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    """InvalidArguments if the arguments don't fit the task: a typed one's signature,
    or a plain one's parameters (every tick of it would enqueue nothing)."""
    connector = registered.connector is not None  # a schedule's jobs name their task's
    # and never get results (pass_results): a task that requires them never runs.
    if registered.signature is not None:
        registered.signature.dump(args, kwargs, connector, results=False)
    elif registered.binding is not None:
        registered.binding.check(args, kwargs, connector=connector, results=False)


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
        renamed = [RENAMED_OPTIONS[option] for option in sorted(unknown & set(RENAMED_OPTIONS))]
        raise ImproperlyConfigured(
            f"PGJOBS['SCHEDULES'][{name!r}]: "
            + (
                f"unknown option(s) {', '.join(sorted(map(limits.shown, unknown)))}; "
                if unknown
                else ""
            )
            + "".join(f"{hint}; " for hint in renamed)
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
        described = "; ".join(
            _on_field(field, " ".join(texts)) for field, texts in problems.items()
        )
        raise ImproperlyConfigured(f"PGJOBS['SCHEDULES'][{name!r}] is invalid: {described}")
    return schedule


def _on_field(field: str, text: str) -> str:
    """A field's problem, named once: argument errors name theirs already ("args: missing
    argument 'b' of add()", "kwargs['x']: ..."), and a non-field error has none."""
    if field == NON_FIELD_ERRORS or text.startswith((f"{field}:", f"{field}[")):
        return text
    return f"{field}: {text}"


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
    rows = bounded(Schedule.objects.using(using).filter(name__in=list(declared)))
    existing = {row.name: unpack(row) for row in rows}
    for name, row in existing.items():
        changed = _differences(declared[name], row)
        if changed:
            logger.warning(
                "schedule %r in PGJOBS['SCHEDULES'] differs from its row (%s); the database "
                "wins (edit it in the admin, or delete the row to re-create it from settings)",
                name,
                "; ".join(changed),
            )
    missing = [schedule for name, schedule in declared.items() if name not in existing]
    Schedule.objects.using(using).bulk_create(missing, ignore_conflicts=True)
    return [schedule.name for schedule in missing]


def _differences(declared: Schedule, row: Schedule) -> list[str]:
    """Each field that differs, with both values, as queues say theirs: the field's name
    alone left the reader to find what each held (a schedule declared without a
    timezone takes TIME_ZONE's, which a project may change since)."""
    fields = sorted(DECLARED_OPTIONS - {"enabled"})
    return [
        f"{field}: {limits.shown(getattr(declared, field))} in settings, "
        f"{limits.shown(getattr(row, field))} in the database"
        for field in fields
        if getattr(declared, field) != getattr(row, field)
    ]


# -- firing ------------------------------------------------------------------------------

#: The schedule's values a tick's job takes: read only within ``shown.limit()``.
JOB_VALUES = ("args", "kwargs")


def bounded(rows: QuerySet[Schedule]) -> QuerySet[Schedule]:
    """``rows`` with their args and kwargs read only within ``shown.limit()``: a row
    written by SQL may hold 255 MB in each, which no tick can enqueue anyway (enqueue
    takes at most ``MAX_PAYLOAD_BYTES``). ``unpack`` each schedule it gives."""
    return shown.within(rows, JOB_VALUES)


def unpack(schedule: Schedule) -> Schedule:
    """Set the args and kwargs of a schedule read through ``bounded``; one over the
    limit is None and named in ``schedule.not_shown``: its ticks enqueue nothing."""
    shown.unpack(schedule, JOB_VALUES, verb="read")
    return schedule


def unreadable(schedule: Schedule) -> str:
    """Why no job can be enqueued from ``schedule``'s args and kwargs as read, or '':
    over the limit, or JSON Python can't read (written by SQL: an ``Unreadable``, said
    so rather than "args must be a list, not Unreadable", a class of ours)."""
    problems = dict(getattr(schedule, "not_shown", {}))
    for field in JOB_VALUES:
        value = getattr(schedule, field, None)
        if isinstance(value, payload.Unreadable):
            problems[field] = f"can't be read: {value.problem}"
    return "; ".join(f"{field} {why}" for field, why in sorted(problems.items()))


@dataclass(frozen=True)
class Fired:
    """What one scheduler did for one tick of a due schedule (or for its missed ticks)."""

    schedule: str
    #: The tick fired; None if it was dropped (catch_up) or had fired already.
    fire_at: datetime | None
    next_fire_at: datetime
    job_id: int | None = None
    #: Ticks that passed unfired before this one (catch_up: late or dropped).
    missed: int = 0
    #: Why the tick enqueued nothing: its job could not be enqueued.
    error: str = ""
    #: Why the tick enqueued nothing: the overlap policy.
    skipped: str = ""


class InvalidSchedule(PgJobsError, ValueError):
    """A stored schedule whose cron or timezone no longer parses (written around save()),
    or that fails to plan in another way; ``schedule_id`` is its row's, when known."""

    def __init__(self, message: str, schedule_id: int | None = None) -> None:
        self.schedule_id = schedule_id
        super().__init__(message)


def next_due_at(using: str, unplannable: Iterable[int] = ()) -> datetime | None:
    """The earliest planned tick of any enabled schedule, but those ``unplannable``: a
    row that can't be planned stays due, and would be the earliest for good."""
    rows = Schedule.objects.using(using).filter(enabled=True)
    if unplannable:
        rows = rows.exclude(pk__in=list(unplannable))
    return rows.aggregate(at=Min("next_fire_at"))["at"]


def retried(error: BaseException) -> bool:
    """Whether a tick that failed with ``error`` is rolled back and fired on a later
    pass, rather than recorded as fired with the error (or its schedule as broken):
    connection trouble (``db.connection_trouble``: the connection lost, the server
    away), or a statement the server gave up on (``db.transient``: a deadlock, a
    serialization failure, a lock timeout, a statement timeout), which a later try
    may well get past. Told by the SQLSTATE, not the class: any other error the
    server sent (an OperationalError too, say 55000) is the refusal of the schedule's
    own task, queue or data, marked on its tick as before; retried, it held up every
    other due schedule of the batch on every pass."""
    return db.connection_trouble(error) or db.transient(error)


def fire_due(
    now: datetime, *, using: str, grace: timedelta, batch_size: int = 100
) -> tuple[list[Fired], list[InvalidSchedule], list[Exception]]:
    """Fire every schedule due at ``now``: enabled, with a tick at or before ``now`` or
    none planned yet. Returns what fired, the rows too broken to plan, and the
    transient errors (``db.transient``) that rolled back a schedule's ticks.

    Schedules are locked and fired ``batch_size`` at a time in one transaction (one
    commit for many ticks); each in a savepoint, so one failing undoes no other.
    Rows another scheduler holds are skipped, not waited for. A transient error (a
    deadlock, serialization failure, lock timeout or statement timeout) rolls back
    that schedule's savepoint alone: its ticks are not recorded, it stays due, and a
    later pass fires them, once; the others commit. Connection trouble is raised:
    the batch's ticks roll back, none recorded, and the next pass fires them, once.
    """
    fired: list[Fired] = []
    broken: list[InvalidSchedule] = []
    deferred: list[Exception] = []
    seen: list[int] = []  # broken or deferred rows stay due; don't pick them up twice
    while True:
        with transaction.atomic(using=using):
            due = (
                Schedule.objects.using(using)
                .select_for_update(skip_locked=True)
                .filter(enabled=True)
                .filter(Q(next_fire_at__lte=now) | Q(next_fire_at__isnull=True))
                .exclude(pk__in=seen)
                .order_by("next_fire_at", "pk")
            )
            batch = list(bounded(due)[:batch_size])
            for schedule in batch:
                seen.append(schedule.pk)
                unpack(schedule)
                try:
                    with transaction.atomic(using=using):
                        fired.extend(fire(schedule, now, using=using, grace=grace))
                except InvalidSchedule as error:
                    broken.append(InvalidSchedule(str(error), schedule.pk))
                except Exception as error:
                    if _deferred(error, using):
                        deferred.append(error)  # its savepoint rolled back: still due
                        continue
                    if retried(error):
                        raise  # this batch's ticks roll back: the loop retries
                    # A row no scheduler can use: not the others' fault.
                    what = f"schedule {schedule.name!r}: {type(error).__name__}: {error}"
                    broken.append(InvalidSchedule(what, schedule.pk))
        if len(batch) < batch_size:
            return fired, broken, deferred


def _deferred(error: Exception, using: str) -> bool:
    """Whether ``error`` undid one schedule's savepoint alone, leaving the batch's
    transaction usable: a transient error, whose savepoint rolled back (if even that
    failed, Django marked the transaction for rollback: the whole batch is retried)."""
    return db.transient(error) and not connections[using].needs_rollback


def fire(schedule: Schedule, now: datetime, *, using: str, grace: timedelta) -> list[Fired]:
    """Fire the due ticks of ``schedule``, whose row the caller holds locked: one
    Fired for each, or one with ``fire_at`` None for ticks only missed.

    Empty when nothing was due: the schedule was only planned (new or edited), or
    another scheduler fired it since it was read.
    """
    try:
        schedule_timing = schedule.cron_schedule()
    except (InvalidCron, UnknownTimezone) as error:
        raise InvalidSchedule(f"schedule {schedule.name!r}: {error}") from None
    window = schedule.catch_up_window
    decision = plan(
        schedule_timing,
        schedule.next_fire_at,
        now,
        schedule.catch_up,
        grace,
        None if window is None else timedelta(seconds=window),
        schedule.catch_up_limit,
    )
    rows = Schedule.objects.using(using).filter(pk=schedule.pk)
    if not decision.fire and not decision.missed:
        if decision.next_fire_at != schedule.next_fire_at:
            rows.update(next_fire_at=decision.next_fire_at)  # first plan after a create or edit
        return []
    last_job_before = schedule.last_job_id
    fired = [
        _fire_tick(schedule, schedule_timing, fire_at, decision.next_fire_at, now, using)
        for fire_at in decision.fire
    ]
    if not fired:
        fired = [Fired(schedule.name, None, decision.next_fire_at)]
    fired[0] = replace(fired[0], missed=decision.missed)
    updates: dict[str, Any] = {"next_fire_at": decision.next_fire_at}
    done = [result.fire_at for result in fired if result.fire_at is not None]
    if done:
        updates["last_fire_at"] = done[-1]
    if schedule.last_job_id != last_job_before:
        updates["last_job_id"] = schedule.last_job_id
    rows.update(**updates)
    return fired


def _fire_tick(
    schedule: Schedule,
    schedule_timing: Timing,
    fire_at: datetime,
    next_fire_at: datetime,
    now: datetime,
    using: str,
) -> Fired:
    """Record the tick and enqueue its job, if the overlap policy lets it (then
    ``schedule.last_job_id`` is that job's)."""
    fired = Fired(schedule.name, fire_at, next_fire_at)
    try:
        with transaction.atomic(using=using):
            tick = ScheduleTick.objects.using(using).create(
                schedule=schedule, fire_at=fire_at, fired_at=now
            )
    except IntegrityError:
        # This tick fired before (its next_fire_at was set back by hand, say).
        return replace(fired, fire_at=None)
    skipped, wait_for = overlap(schedule, using)
    if skipped:
        tick.error = skipped
        tick.save(update_fields=["error"])
        logger.info("schedule %r: tick %s %s", schedule.name, fire_at, skipped)
        return replace(fired, skipped=skipped)
    # Due when the tick fired (or its jitter says), by the scheduler's clock (the
    # database's), not by this host's: a fast host would make it wait.
    due = fire_at + tick_delay(schedule, schedule_timing, fire_at)
    try:
        with transaction.atomic(using=using):
            job = _enqueue(schedule, max(due, now), wait_for, fire_at=fire_at.isoformat())
    except Exception as error:
        if retried(error):
            raise  # the schedule's savepoint rolls back: fired on a later pass (fire_due)
        # The task was removed, its queue deleted, a site's trigger refused its job
        # ...: record the tick as fired with the reason, rather than retrying a broken
        # schedule every loop.
        tick.error = f"{type(error).__name__}: {error}"
        tick.save(update_fields=["error"])
        logger.error("schedule %r: tick %s enqueued nothing: %s", schedule.name, fire_at, error)
        return replace(fired, error=tick.error)
    tick.job_id = job.pk
    tick.save(update_fields=["job"])
    return replace(fired, job_id=job.pk)


def tick_delay(schedule: Schedule, schedule_timing: Timing, fire_at: datetime) -> timedelta:
    """How long after its tick ``fire_at`` the job is due: the schedule's jitter, the
    same on every scheduler, and less than the time to the next tick."""
    if not schedule.jitter:
        return timedelta(0)
    gap = schedule_timing.next_after(fire_at) - fire_at
    return jitter_delay(schedule.name, fire_at, schedule.jitter, gap)


def overlap(schedule: Schedule, using: str) -> tuple[str, list[int]]:
    """What the overlap policy says of a new job of ``schedule`` now: ``("", [])`` to
    enqueue it, ``("", [id])`` to enqueue it waiting for job ``id``, or why not.

    Judged by the state of ``schedule.last_job``: under ``skip`` a new job waits
    for no unfinished one; under ``queue`` one may wait behind the one running
    (executing, or between attempts), and no more.
    """
    if schedule.overlap == "allow" or schedule.last_job_id is None:
        return "", []
    last = schedule.last_job_id
    state = Job.objects.using(using).filter(pk=last).values_list("state", flat=True).first()
    if state is None or state in FINISHED:  # finished, or pruned since
        return "", []
    if schedule.overlap == "queue":
        if state in (JobState.EXECUTING, JobState.RETRYABLE):
            return "", [last]
        return (
            f"skipped: job {last} of this schedule is {state}, waiting to run (overlap=queue)",
            [],
        )
    return f"skipped: job {last} of this schedule is {state} (overlap=skip)", []


def _enqueue(schedule: Schedule, run_at: datetime | None, wait_for: list[int], **meta: str) -> Job:
    """Enqueue the schedule's job (waiting for ``wait_for``, whatever their outcome);
    it becomes ``schedule.last_job_id``."""
    if problem := unreadable(schedule):  # recorded on the tick, and logged, as any refusal
        raise PayloadError(f"{problem}; edit or delete the schedule", problem.split()[0])
    job = Job.enqueue(
        schedule.task,
        args=schedule.args,
        kwargs=schedule.kwargs,
        queue=schedule.queue or None,
        priority=schedule.priority,
        run_at=run_at,
        depends_on=wait_for,
        on_dependency_failure="run" if wait_for else "cancel",
        meta={"schedule": schedule.name, **meta},
    )
    schedule.last_job_id = job.pk
    return job


def prune_ticks(now: datetime, older_than: timedelta, using: str | None = None) -> int:
    """Delete the records of ticks fired more than ``older_than`` ago. InvalidOption,
    as ``maintenance.prune_finished`` says, for an ``older_than`` no limit can be."""
    fired_before = limits.before(now, older_than)
    using = using or conf.get("DATABASE")
    deleted, _ = ScheduleTick.objects.using(using).filter(fired_at__lt=fired_before).delete()
    return deleted


def plan_problem(schedule: Schedule) -> str | None:
    """Why no scheduler can plan ``schedule`` (its cron or timezone no longer parses:
    written around save()), or None."""
    try:
        schedule.cron_schedule()
    except (InvalidCron, UnknownTimezone) as error:
        return str(error)
    return None


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
    tick after now (missed ticks don't fire) and wake the schedulers. Ids that are
    not whole numbers from 1 up, a string of them included, and an ``enabled`` that
    is not a bool raise InvalidOption (``set_enabled("12", True)`` enabled
    schedules 1 and 2).
    """
    ids = limits.row_ids(schedule_ids, "schedule_ids")
    limits.boolean(enabled, "enabled")
    rows = Schedule.objects.using(using or conf.get("DATABASE")).filter(pk__in=ids)
    return rows.exclude(enabled=enabled).update(enabled=enabled)


class NotRun(PgJobsError):
    """Run now enqueued nothing: the schedule's overlap policy says no."""


def run_now(schedule: Schedule, now: datetime | None = None) -> Job:
    """Enqueue the schedule's job at once, outside its ticks.

    No tick is recorded and the next tick is unchanged: this is an extra run. The
    overlap policy holds for it as for a tick: under ``skip`` (or ``queue`` with one
    waiting already) it raises ``NotRun`` while the last job is unfinished; under
    ``queue`` it waits behind the running one. Raises what ``Job.enqueue`` raises
    (the task or queue is gone) and enqueues nothing then.
    """
    now = now or timezone.now()
    using = conf.get("DATABASE")
    with transaction.atomic(using=using):
        locked = unpack(
            bounded(Schedule.objects.using(using).select_for_update()).get(pk=schedule.pk)
        )
        skipped, wait_for = overlap(locked, using)
        if skipped:
            raise NotRun(skipped.replace("skipped: ", "not run: ", 1))
        job = _enqueue(locked, None, wait_for, run_now=now.isoformat())
        Schedule.objects.using(using).filter(pk=locked.pk).update(last_job_id=job.pk)
    schedule.last_job_id = job.pk
    return job
