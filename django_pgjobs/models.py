"""Queues, jobs and worker processes.

State changes don't happen here: they go through ``transitions`` so that the
worker, the admin and user code share one implementation.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.base import ModelState
from django.utils import timezone

from . import conf, limits, payload
from .backoff import STRATEGIES, Backoff
from .exceptions import InvalidOption
from .payload import names_in
from .queues import NAME_CHARACTERS
from .states import ACTIVE, CLAIMABLE, FINISHED, JobState

if TYPE_CHECKING:
    from .enqueue import JobSpec

if apps.apps_ready and not apps.is_installed("django_pgjobs"):
    # @task, Job, the API's URLs all load these models: Django's own error named the
    # first of them ("Model class django_pgjobs.models.Queue doesn't declare an
    # explicit app_label and isn't in an application in INSTALLED_APPS"), not the fix.
    raise ImproperlyConfigured(
        "django_pgjobs is not installed: add 'django_pgjobs' to INSTALLED_APPS, then run "
        "`python manage.py migrate`."
    )

#: Queue and connector names, as their CHECK constraints say (length is the field's).
NAME_PATTERN = rf"^{NAME_CHARACTERS}+$"


def _in(states: Iterable[str]) -> list[str]:
    return sorted(str(s) for s in states)


#: States few jobs are in at a time, among millions of completed ones: the job list
#: under one of them reads its newest through pgjobs_job_rare_by_id.
RARE = set(JobState) - {JobState.AVAILABLE, JobState.EXECUTING, JobState.COMPLETED}


class ReadableJSONField(models.JSONField):
    """Django's JSONField, except that a stored value Python's json can't read back (an
    integer of 5,000 digits, a decimal past a float's range, nesting deeper than the
    stack: a row written around the checks of enqueue) loads as a ``payload.Unreadable``
    holding its text, as Django already does with text that is not JSON, instead of
    raising (or, for the decimal, giving infinity) in every worker, page and answer
    that reads the row."""

    def validate(self, value: Any, model_instance: Any) -> None:
        """Django's, refusing as ValidationError too what json can't encode but by
        ValueError or RecursionError (an integer of 5,000 digits, a value that contains
        itself, nesting past the stack): Django catches TypeError only, and these came
        out of ``full_clean()`` where its callers, forms too, expect ValidationError."""
        try:
            super().validate(value, model_instance)
        except (ValueError, RecursionError):
            raise ValidationError(
                self.error_messages["invalid"], code="invalid", params={"value": value}
            ) from None

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if not isinstance(value, str):  # None, or a key's value a backend gave as it is
            return super().from_db_value(value, expression, connection)
        try:
            return payload.decode(value)  # Django's json.loads, but for floats (payload)
        except json.JSONDecodeError:  # text that is no JSON, returned as Django does
            return value
        except (ValueError, RecursionError) as error:
            return payload.unreadable(value, error)


def unread_fields(row: models.Model) -> frozenset[str]:
    """The fields of ``row`` that were not read whole: too large (``shown.within``, named
    in ``row.not_shown``), or read in part (``stand_in``: a job's errors read as kept, a
    value a claim left out). Each holds a stand-in (None, ``{}``, a cut list) that
    saving the row must not write over the stored value."""
    named = getattr(row, "not_shown", None)
    partly = row.__dict__.get("_stand_ins")
    if not named and not partly:
        return frozenset()
    return frozenset(named or ()) | frozenset(partly or ())


def stand_in(row: models.Model, name: str, value: Any) -> None:
    """Set field ``name`` of ``row`` to ``value``, standing in for a value not read
    whole: ``save()`` leaves the stored value as it is, and refuses to write it if
    ``value`` was changed since (``save_read_fields``)."""
    row.__dict__[name] = value
    row.__dict__.setdefault("_stand_ins", {})[name] = copy.deepcopy(value)


def read_whole(row: models.Model, name: str) -> None:
    """Field ``name`` of ``row`` is a whole value again (given by the caller): saved."""
    if isinstance(getattr(row, "not_shown", None), dict):
        row.not_shown.pop(name, None)
    row.__dict__.get("_stand_ins", {}).pop(name, None)


def save_read_fields(
    row: models.Model,
    kwargs: dict[str, Any],
    unread: frozenset[str],
    every: Sequence[str] | None = None,
) -> None:
    """Leave ``unread`` fields out of the ``update_fields`` of a ``save(**kwargs)``
    (``every`` field when it names none: by default all but the primary key), as Django
    leaves out deferred fields: their stand-ins are never written over the stored
    values.

    ValueError, nothing written, for a save that would have to write one: an insert
    (a copy of the row), ``update_fields`` that name one, or a stand-in changed since it
    was read (the caller's new value would be lost without a word). To write such a
    value, read the row whole (``Model.objects.get``) or ``update()`` the column."""
    named = kwargs.get("update_fields")
    if named is None and every is not None:
        kwargs["update_fields"] = list(every)
    if not unread:
        return
    model, pk = row._meta.model_name, row.pk
    why = "not read whole (too large to show, or read in part)"
    fix = f"read the {model} whole (objects.get) to write it, or update() the column"
    if row._state.adding or row.pk is None or kwargs.get("force_insert"):
        fields = ", ".join(sorted(unread))
        raise ValueError(f"{model} {pk}: can't be saved as a new row: {fields} {why}; {fix}")
    if named is not None:
        if asked := sorted(unread & {str(name) for name in named}):
            raise ValueError(
                f"{model} {pk}: update_fields names {', '.join(asked)}, {why}: saving "
                f"would write what stands for it over the stored value; {fix}"
            )
    else:
        stand_ins, values = row.__dict__.get("_stand_ins", {}), row.__dict__
        if changed := sorted(
            name for name in unread if name in stand_ins and values.get(name) != stand_ins[name]
        ):
            raise ValueError(
                f"{model} {pk}: {', '.join(changed)} changed, but {why}: the change "
                f"would be lost; {fix}"
            )
        named = every or [f.name for f in row._meta.concrete_fields if not f.primary_key]
    kwargs["update_fields"] = [f for f in named if f not in unread]


def times_in_range(name: str, *fields: str, nullable: Iterable[str] = ()) -> models.CheckConstraint:
    """A CHECK that the times of ``fields`` (and of ``nullable`` ones, when set) lie within
    ``limits.EARLIEST``..``limits.END``: the times Python can load and every local time
    zone can show. Enqueue checks as much; this stops rows written any other way."""
    within = {"gte": limits.EARLIEST, "lt": limits.END}
    condition = Q()
    for field in fields:
        condition &= Q(**{f"{field}__{op}": bound for op, bound in within.items()})
    for field in nullable:
        condition &= Q(**{f"{field}__isnull": True}) | Q(
            **{f"{field}__{op}": bound for op, bound in within.items()}
        )
    return models.CheckConstraint(condition=condition, name=name)


def rate_limit_field(of: str) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=f"Most {of} started per rate period, across all workers, in any window "
        f"of that length; 1 to {limits.MAX_RATE:,}; empty = no limit.",
    )


def rate_period_field() -> models.FloatField:
    # blank: a form that leaves it out keeps the default (an emptied one is refused).
    return models.FloatField(
        default=1.0, blank=True, help_text="Seconds: the window of the rate limit."
    )


def rate_limit_valid(name: str, limit: str = "rate_limit", period: str = "rate_period") -> Any:
    """A CHECK on a rate limit and its period: what ``limits.rate_limit`` and
    ``limits.seconds`` take."""
    return models.CheckConstraint(
        condition=(
            Q(**{f"{limit}__isnull": True})
            | Q(**{f"{limit}__gte": 1, f"{limit}__lte": limits.MAX_RATE})
        )
        & Q(**{f"{period}__gt": 0, f"{period}__lte": limits.MAX_SECONDS}),
        name=name,
    )


class Queue(models.Model):
    """Per-queue settings. A queue named in ``PGJOBS["QUEUES"]`` gets a row on first use."""

    name = models.CharField(max_length=63, primary_key=True)
    concurrency = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most jobs of this queue executing at once across all workers; empty = no limit.",
    )
    priority = models.SmallIntegerField(
        default=0, help_text="Workers serving several queues claim from higher values first."
    )
    paused = models.BooleanField(default=False, help_text="Paused queues start no new jobs.")
    blocking = models.BooleanField(
        default=False,
        help_text="Run one job at a time, in priority/run_at order; a job waiting "
        "for its retry holds the queue until it has run again.",
    )
    max_attempts = models.PositiveIntegerField(
        null=True, blank=True, help_text="Default for jobs of this queue; empty = PGJOBS setting."
    )
    backoff_strategy = models.CharField(
        max_length=16, blank=True, choices=[(s, s) for s in STRATEGIES]
    )
    backoff_base = models.FloatField(null=True, blank=True, help_text="Seconds.")
    backoff_max = models.FloatField(null=True, blank=True, help_text="Seconds.")
    backoff_jitter = models.FloatField(null=True, blank=True, help_text="Fraction, 0..1.")
    rate_limit = rate_limit_field("jobs of this queue")
    rate_period = rate_period_field()
    key_concurrency = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most jobs of one concurrency_key executing at once across all workers "
        "(other keys' jobs run meanwhile); empty = no limit per key.",
    )
    key_rate_limit = rate_limit_field("jobs of one concurrency_key")
    key_rate_period = rate_period_field()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(name__regex=NAME_PATTERN), name="pgjobs_queue_name_valid"
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__isnull=True) | Q(max_attempts__gte=1),
                name="pgjobs_queue_max_attempts_positive",
            ),
            models.CheckConstraint(
                condition=Q(key_concurrency__isnull=True) | Q(key_concurrency__gte=1),
                name="pgjobs_queue_key_concurrency_positive",
            ),
            # A worker computes a failed job's retry from these (NaN or a delay past
            # year 9999 would fail it): the limits of backoff.Backoff.
            models.CheckConstraint(
                condition=(Q(backoff_strategy="") | Q(backoff_strategy__in=STRATEGIES))
                & (
                    Q(backoff_base__isnull=True)
                    | Q(backoff_base__gte=0, backoff_base__lte=limits.MAX_SECONDS)
                )
                & (
                    Q(backoff_max__isnull=True)
                    | Q(backoff_max__gte=0, backoff_max__lte=limits.MAX_SECONDS)
                )
                & (
                    Q(backoff_jitter__isnull=True) | Q(backoff_jitter__gte=0, backoff_jitter__lte=1)
                ),
                name="pgjobs_queue_backoff_valid",
            ),
            times_in_range("pgjobs_queue_times_in_range", "updated_at"),
            rate_limit_valid("pgjobs_queue_rate_limit_valid"),
            rate_limit_valid(
                "pgjobs_queue_key_rate_limit_valid", "key_rate_limit", "key_rate_period"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, **kwargs: Any) -> None:
        """Save; refuses (ValidationError) a value no worker could use, even without
        full_clean(), rather than leave it to the database to refuse with an error."""
        self.check_options()
        super().save(**kwargs)

    def clean(self) -> None:
        self.check_options()

    def check_options(self) -> None:
        from django.core.exceptions import ValidationError

        from .exceptions import InvalidQueueName
        from .queues import OPTIONS, check_options

        options = {option: getattr(self, option) for option in OPTIONS}
        try:
            limits.validation_error(lambda: check_options(self.name, options))
        except InvalidQueueName as error:
            raise ValidationError({"name": str(error)}) from None

    def backoff(self) -> Backoff:
        """This queue's retry policy: its own fields over the PGJOBS default."""
        options = dict(conf.get("BACKOFF"))
        own = {
            "strategy": self.backoff_strategy or None,
            "base": self.backoff_base,
            "max": self.backoff_max,
            "jitter": self.backoff_jitter,
        }
        options.update({k: v for k, v in own.items() if v is not None})
        return Backoff.from_dict(options)


class WorkerProcess(models.Model):
    """One running ``runworker`` process; it heartbeats its row while alive."""

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = ReadableJSONField(default=list)
    concurrency = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)
    stop_requested = models.BooleanField(default=False)
    clock_skew = models.FloatField(
        null=True,
        blank=True,
        help_text="Seconds this host's clock is ahead of the database's (negative: behind), "
        "as measured at the last heartbeat.",
    )
    failing = ReadableJSONField(
        null=True,
        blank=True,
        help_text="What of the worker keeps failing, as its last heartbeat said: its "
        "loop's passes or a queue's claims, since when (UTC), how many failures and the "
        "error's class (django_pgjobs.failing); null when nothing fails.",
    )

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "worker process"
        verbose_name_plural = "worker processes"
        constraints = [
            times_in_range("pgjobs_workerprocess_times_in_range", "started_at", "heartbeat_at")
        ]

    def __str__(self) -> str:
        return f"worker {self.pk} ({self.host}:{self.pid})"

    def save(self, **kwargs: Any) -> None:
        """Save; queues and failing not read, being too large (``shown.within``), stay
        as stored."""
        save_read_fields(self, kwargs, unread_fields(self))
        super().save(**kwargs)


class JobDependency(models.Model):
    """``job`` waits for ``depends_on``: an edge of a pipeline."""

    job = models.ForeignKey("Job", on_delete=models.CASCADE, related_name="+")
    depends_on = models.ForeignKey("Job", on_delete=models.CASCADE, related_name="+")
    # Set once this edge has been counted off the job's pending_dependencies, so a
    # dependency that finishes twice (retried by an operator) releases nothing twice.
    satisfied = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "job dependencies"
        constraints = [
            models.UniqueConstraint(fields=["depends_on", "job"], name="pgjobs_dependency_unique"),
            models.CheckConstraint(
                condition=~Q(job=models.F("depends_on")), name="pgjobs_dependency_not_self"
            ),
        ]
        indexes = [
            models.Index(fields=["job"], name="pgjobs_dependency_job"),
            # The release trigger's "does anything wait at all?" (pgjobs_job_transitioned).
            models.Index(
                fields=["depends_on"],
                condition=Q(satisfied=False),
                name="pgjobs_dependency_unsatisfied",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.job_id} waits for #{self.depends_on_id}"


class Job(models.Model):
    task = models.CharField(max_length=255)
    queue = models.CharField(max_length=63)
    args = ReadableJSONField(default=list)
    kwargs = ReadableJSONField(default=dict)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.AVAILABLE)
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first.")
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=20)
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds per attempt.")
    run_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    errors = ReadableJSONField(default=list, blank=True)
    result = ReadableJSONField(null=True, blank=True)
    # NULL, not "", means "no key": NULLs never collide in the unique index.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    connector = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Who holds the job while it executes; every write of the outcome checks the lease.
    worker = models.ForeignKey(
        WorkerProcess,
        null=True,
        blank=True,
        # Rows of stopped workers are deleted; finished jobs keep the dangling id
        # as history instead of a mass UPDATE on every job the worker ever ran.
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # pgjobs_job_executing (queue, worker) covers the lookups that matter
        related_name="jobs",
    )
    lease = models.UUIDField(null=True, blank=True, editable=False)
    # Dependencies not completed yet; the job leaves `waiting` when this reaches 0.
    pending_dependencies = models.PositiveIntegerField(default=0)
    # Options that travel with the job: pipeline id, pass_results, on_dependency_failure.
    meta = ReadableJSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # Matches the claim query's WHERE and ORDER BY exactly. It carries the
            # state too, so that claimable jobs are counted per state from it alone.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "run_at",
                "id",
                include=["state"],
                condition=Q(state__in=_in(CLAIMABLE)),
                name="pgjobs_job_claim",
            ),
            # Executing jobs by queue (limited claims count them) and by worker (rescue,
            # the admin's workers): one index, not one for each, as each claimed job is
            # an entry in every index of its state (2.5 us of server CPU per job less
            # than two, bench/README.md). A lookup by worker alone scans the whole
            # index, whose entries are only the jobs executing (10,000 of them: the
            # admin's workers page 1.6 ms, against 1.2 with an index of its own).
            models.Index(
                fields=["queue", "worker"],
                condition=Q(state="executing"),
                name="pgjobs_job_executing",
            ),
            models.Index(
                fields=["finished_at"],
                condition=Q(state__in=_in(FINISHED)),
                name="pgjobs_job_finished",
            ),
            # The newest jobs of a state rare among millions of completed ones, for the
            # job list under it (and `pgjobs list --state`): walking the primary key
            # back for 50 of them read every newer job (6 ms at 10M for discarded ones;
            # 134 ms for 2,000 retryable jobs behind 400,000 newer). Available,
            # executing and completed jobs are no entry: enqueue, claim and W2 write none.
            models.Index(
                fields=["state", "id"],
                condition=Q(state__in=_in(RARE)),
                name="pgjobs_job_rare_by_id",
            ),
            # Counts per state and queue (admin, dashboard) of every state but two:
            # available and executing jobs are counted from pgjobs_job_claim and
            # pgjobs_job_executing, which hold them by queue. Entries here too were
            # an index insert more on every enqueue and every claim.
            models.Index(
                fields=["state", "queue"],
                condition=Q(
                    state__in=_in(set(JobState) - {JobState.AVAILABLE, JobState.EXECUTING})
                ),
                name="pgjobs_job_state_queue_rest",
            ),
            # A unique_for key's jobs of its window, whatever their state (enqueue's
            # _insert_unique): without it each such enqueue read the whole table (100 ms
            # at a million jobs) while holding the key's lock. Jobs without a key, most
            # of them, are no entry.
            models.Index(
                fields=["queue", "unique_key", "created_at"],
                condition=Q(unique_key__isnull=False),
                name="pgjobs_job_unique_key_since",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=[s.value for s in JobState]), name="pgjobs_job_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="pgjobs_job_max_attempts_positive"
            ),
            models.CheckConstraint(
                condition=~Q(state="executing") | Q(lease__isnull=False),
                name="pgjobs_job_executing_has_lease",
            ),
            # What no worker, page or answer could load or use (enqueue refuses as
            # much, and these stop rows written any other way): times outside years
            # 1-9999 (a day in), a timeout that is no finite number of seconds.
            times_in_range(
                "pgjobs_job_times_in_range",
                "run_at",
                "created_at",
                nullable=["attempted_at", "finished_at"],
            ),
            models.CheckConstraint(
                condition=Q(timeout__isnull=True)
                | Q(timeout__gt=0, timeout__lte=limits.MAX_SECONDS),
                name="pgjobs_job_timeout_in_range",
            ),
            # Jobs without a key (most) stay out of the index: an entry for each
            # of them on insert and again on claim was a tenth of a bulk insert.
            # A key is unique within a queue: whoever may use one queue (an API
            # token scoped to it) can neither see nor occupy another queue's keys.
            models.UniqueConstraint(
                fields=["queue", "unique_key"],
                condition=Q(state__in=_in(ACTIVE), unique_key__isnull=False),
                name="pgjobs_job_queue_unique_key_active",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task} [{self.state}]"

    def save(self, **kwargs: Any) -> None:
        """Save; a value not read whole is left as stored (``save_read_fields``): one
        over the limit of a job read as shown (``shown.read``: None, named in
        ``not_shown``), its errors read as kept (the first and latest ``KEPT``), a value
        a claim left out or has not yet loaded (``loaded``). A save that would write one
        (an insert, ``update_fields`` naming it, a stand-in changed since) is refused
        (ValueError) and writes nothing. Deferred fields (a duplicate's holder) are
        Django's: left out unless read or set."""
        unread = unread_fields(self)
        if waiting := getattr(self, "deferred", None):  # a claim's, not yet loaded
            unread |= frozenset(waiting)
        save_read_fields(self, kwargs, unread)
        super().save(**kwargs)

    def refresh_from_db(self, using: str | None = None, fields: Any = None, **kwargs: Any) -> None:
        """Django's: the values read again are whole, so no longer left out of a save.
        (Django reads one deferred field so too, when it is asked for.)"""
        super().refresh_from_db(using, fields, **kwargs)
        if unread_fields(self) and not kwargs.get("from_queryset"):
            names = fields or [field.name for field in self._meta.concrete_fields]
            for name in names:
                read_whole(self, name)

    # -- the public API (DESIGN.md) -------------------------------------------------

    @classmethod
    def from_fields(cls, fields: dict[str, Any], using: str | None = None) -> Job:
        """A Job holding ``fields`` ({attname: value}, every field), as stored in
        ``using`` (or unsaved if None).

        What ``Model.__init__`` makes, without its per-field descriptor calls and
        its pre_init/post_init signals (Job has no field that needs them): a
        worker builds one per claimed job and ``enqueue_many`` one per new job,
        and there ``__init__`` was the largest single cost.
        """
        job = cls.__new__(cls)
        job._state = ModelState()
        if using is not None:
            job._state.adding, job._state.db = False, using
        job.__dict__.update(fields)
        return job

    @classmethod
    def enqueue(
        cls,
        task: str,
        args: Sequence[Any] | None = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        connector: str | None = None,
        depends_on: Sequence[Job | int] = (),
        timeout: float | None = None,
        pass_results: bool = False,
        on_dependency_failure: str = "cancel",
        meta: dict[str, Any] | None = None,
        debounce_key: str | None = None,
        debounce: float | None = None,
        concurrency_key: str | None = None,
    ) -> Job:
        """Insert one job in the caller's transaction and return it. None means none
        for ``args``, ``kwargs`` and ``meta`` alike; anything else not a list (``args``)
        or a dict (``kwargs``, ``meta``) is a PayloadError, an empty one of the wrong
        type too (``kwargs or {}`` took ``[]`` and ``""`` for no kwargs)."""
        from .enqueue import JobSpec, insert_jobs

        # Positional, in JobSpec's order (tests/test_enqueue.py holds the two to the
        # same names and order): a third of the cost of 17 keywords.
        spec = JobSpec(
            task,
            () if args is None else args,
            {} if kwargs is None else kwargs,
            queue,
            priority,
            run_at,
            max_attempts,
            unique_key,
            connector,
            depends_on,
            timeout,
            pass_results,
            on_dependency_failure,
            {} if meta is None else meta,
            debounce_key,
            debounce,
            concurrency_key,
        )
        return insert_jobs([spec])[0]

    @classmethod
    def enqueue_many(cls, specs: Iterable[JobSpec | dict[str, Any]]) -> list[Job]:
        """Insert many jobs in one round trip; each item is a JobSpec or its dict."""
        from .enqueue import insert_jobs

        if isinstance(specs, str | bytes | dict) or not isinstance(specs, Iterable):
            # A dict alone was read as its keys, each then "not a mapping".
            raise TypeError(
                "enqueue_many takes a list of JobSpecs or dicts of Job.enqueue's "
                f"arguments, not {type(specs).__name__}"
            )
        return insert_jobs(list(specs))

    def retry(self, *, include_completed: bool | datetime = True) -> Job:
        """Make this job run again as soon as possible (operator action). A completed
        job too, unless ``include_completed`` is False (then it is left alone:
        InvalidTransition), or a time it completed after (``transitions.retry``)."""
        from .transitions import retry

        return retry(self, include_completed=include_completed)

    def cancel(self) -> Job:
        """Cancel this job; a job already finished is left as it is."""
        from .transitions import cancel

        return cancel(self)

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    def wait(self, timeout: float | None = None) -> Job:
        """Block until this job is finished (woken by NOTIFY); raise TimeoutError."""
        from .waiting import wait_for

        return wait_for(self, timeout)

    async def async_wait(self, timeout: float | None = None) -> Job:
        """``wait()`` for async code."""
        from .waiting import async_wait_for

        return await async_wait_for(self, timeout)


# -- cron schedules (scheduler.py fires them, cron.py says when) ------------------------


def default_timezone() -> str:
    """New schedules read their cron fields on the project's clock unless they name another."""
    from django.conf import settings

    return getattr(settings, "TIME_ZONE", None) or "UTC"


def validate_cron(value: str) -> None:
    from django.core.exceptions import ValidationError

    from .cron import InvalidCron, parse_expression

    try:
        parse_expression(value)
    except InvalidCron as error:
        raise ValidationError(str(error), code="invalid_cron") from None


def validate_timezone(value: str) -> None:
    from django.core.exceptions import ValidationError

    from .cron import UnknownTimezone, parse_timezone

    try:
        parse_timezone(value)
    except UnknownTimezone as error:
        raise ValidationError(str(error), code="unknown_timezone") from None


CATCH_UP_CHOICES = [
    ("latest", "latest: the latest missed tick, once"),
    ("all", "all: every missed tick, up to the limit"),
    ("none", "none: no missed tick (only one at most MISFIRE_GRACE late)"),
]
OVERLAP_CHOICES = [
    ("allow", "allow: fire whatever the previous job is doing"),
    ("skip", "skip: not while the previous job is unfinished"),
    ("queue", "queue: at most one job waiting behind the running one"),
]
#: Longest jitter of a schedule, in seconds: a day.
MAX_JITTER = 86_400
#: Most missed ticks a schedule with catch_up "all" fires at once.
MAX_CATCH_UP_LIMIT = 1000
#: Longest catch-up window, in seconds: ten years (longer is "however late": leave it empty).
MAX_CATCH_UP_WINDOW = 10 * 365 * 86_400
#: Most fire times ``Schedule.upcoming`` lists in one call (10**9 looped for minutes).
MAX_UPCOMING = 10_000


class Schedule(models.Model):
    """A cron schedule that enqueues a job at each tick.

    Edit it any time (admin, ORM, SQL): a changed cron, timezone or a re-enable
    clears ``next_fire_at`` (database trigger), and running schedulers are
    notified and plan from the first tick after that moment (with none running:
    after the moment one starts and sees it).
    """

    name = models.CharField(max_length=200, unique=True)
    cron = models.CharField(
        max_length=100,
        validators=[validate_cron],
        help_text="minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' or "
        "'30 2 * * 1-5'; a sixth field first for seconds ('*/10 * * * * *'); @hourly, @daily, "
        "@weekly, @monthly, @yearly; or an interval of elapsed time: '@every 30s', "
        "'@every 1h30m'.",
    )
    timezone = models.CharField(
        max_length=63,
        default=default_timezone,
        validators=[validate_timezone],
        help_text="IANA name, e.g. 'Europe/Berlin': the cron fields are read on this clock.",
    )
    task = models.CharField(max_length=255, help_text="Dotted path of a @task function.")
    args = ReadableJSONField(default=list, blank=True)
    kwargs = ReadableJSONField(default=dict, blank=True)
    queue = models.CharField(max_length=63, blank=True, help_text="Empty: the task's queue.")
    priority = models.SmallIntegerField(
        null=True, blank=True, help_text="Empty: the task's priority."
    )
    enabled = models.BooleanField(default=True)
    jitter = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_JITTER)],
        help_text="Seconds: each tick's job is due up to this much later (0-86400), the same "
        "delay for a tick on every scheduler; spreads schedules that share a time.",
    )
    overlap = models.CharField(
        max_length=8,
        choices=OVERLAP_CHOICES,
        default="allow",
        help_text="What a tick does while the schedule's previous job is unfinished.",
    )
    catch_up = models.CharField(
        max_length=8,
        choices=CATCH_UP_CHOICES,
        default="latest",
        help_text="What fires for ticks missed while no scheduler ran.",
    )
    catch_up_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CATCH_UP_WINDOW)],
        help_text="Seconds: missed ticks older than this never fire (latest, all). "
        "Empty: however old.",
    )
    catch_up_limit = models.PositiveSmallIntegerField(
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CATCH_UP_LIMIT)],
        help_text="all: the most missed ticks fired at once, the latest ones (1-1000).",
    )
    # Written by schedulers only; save() leaves them alone.
    last_fire_at = models.DateTimeField(null=True, blank=True, editable=False)
    next_fire_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_job = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        editable=False,
        # Pruning deletes old jobs in bulk; the schedule keeps the id.
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        help_text="The last job a tick or 'run now' enqueued: what the overlap policy watches.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    SCHEDULER_FIELDS = frozenset({"last_fire_at", "next_fire_at", "last_job"})

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(
                fields=["next_fire_at"], condition=Q(enabled=True), name="pgjobs_schedule_due"
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(catch_up__in=[value for value, _ in CATCH_UP_CHOICES]),
                name="pgjobs_schedule_catch_up_valid",
            ),
            models.CheckConstraint(
                condition=Q(overlap__in=[value for value, _ in OVERLAP_CHOICES]),
                name="pgjobs_schedule_overlap_valid",
            ),
            models.CheckConstraint(
                condition=Q(jitter__gte=0, jitter__lte=MAX_JITTER)
                & Q(catch_up_limit__gte=1, catch_up_limit__lte=MAX_CATCH_UP_LIMIT)
                & (
                    Q(catch_up_window__isnull=True)
                    | Q(catch_up_window__gte=1, catch_up_window__lte=MAX_CATCH_UP_WINDOW)
                ),
                name="pgjobs_schedule_policies_in_range",
            ),
            times_in_range(
                "pgjobs_schedule_times_in_range",
                "created_at",
                "updated_at",
                nullable=["last_fire_at", "next_fire_at"],
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, **kwargs: Any) -> None:
        """Save; refuses (ValidationError) an invalid cron or timezone, and what the table
        can't hold or a scheduler can't read back, even without full_clean().

        Updates leave ``last_fire_at``/``next_fire_at`` alone: a form loaded before
        a tick must not write back the times the scheduler has moved on from.
        """
        from django.core.exceptions import ValidationError

        from .schedules import check_storable_fields, check_timing_fields

        unread = unread_fields(self)
        problems: dict[str, list[str]] = {}
        for check in (check_storable_fields, check_timing_fields):
            try:
                check(self)
            except ValidationError as error:
                # Each check's words on a field kept: "too long" was replaced by the
                # timing check's "unknown timezone".
                for field, texts in error.message_dict.items():
                    problems.setdefault(field, []).extend(texts)
        problems = {field: texts for field, texts in problems.items() if field not in unread}
        if problems:
            raise ValidationError(problems)
        every = [
            field.name
            for field in self._meta.concrete_fields
            if not field.primary_key and field.name not in self.SCHEDULER_FIELDS
        ]
        updating = not self._state.adding and not kwargs.get("force_insert")
        save_read_fields(self, kwargs, unread, every if updating else None)
        super().save(**kwargs)

    def clean_fields(self, exclude: Iterable[str] | None = None) -> None:
        """Django's checks of each field, after the strict ones of the policy fields:
        a Django integer field would round 1.5 to 1, read True as 1, and fail with an
        OverflowError on an infinite float."""
        from django.core.exceptions import ValidationError

        from .schedules import check_policy_fields

        problems: dict[str, list[str]] = {}
        try:
            check_policy_fields(self)
        except ValidationError as error:
            problems.update(error.message_dict)
        try:
            super().clean_fields(exclude={*(exclude or ()), *problems})
        except ValidationError as error:
            problems.update(error.message_dict)
        if problems:
            raise ValidationError(problems)

    def clean(self) -> None:
        from .schedules import check_job_fields

        check_job_fields(self)

    def cron_schedule(self) -> Any:
        """This schedule's expression and timezone: a ``cron.Cron`` or ``cron.Interval``."""
        from .cron import timing

        return timing(self.cron, self.timezone)

    def upcoming(self, count: int = 5, after: datetime | None = None) -> list[datetime]:
        """The next ``count`` fire times after ``after`` (default: now), in UTC; fewer
        where they would reach the end of the times a row holds (``limits.END``).
        InvalidOption for a ``count`` that is no whole number from 0 to
        ``MAX_UPCOMING``, or an ``after`` that is no time a row holds (``limits.instant``)."""
        cron = self.cron_schedule()
        count = limits.whole_number(count, "count", 0, MAX_UPCOMING)
        current = timezone.now() if after is None else limits.instant(after, "after")
        times: list[datetime] = []
        while len(times) < count:
            try:
                current = cron.next_after(current)
            except (OverflowError, ValueError):  # the next one is past the year 9999
                break
            if current >= limits.END:
                break
            times.append(current)
        return times


class ScheduleTick(models.Model):
    """A tick a scheduler fired. Unique per (schedule, fire_at): a tick fires once,
    however many schedulers run, because the database refuses the second row."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks")
    fire_at = models.DateTimeField(help_text="The tick: when the schedule was due.")
    fired_at = models.DateTimeField(help_text="When a scheduler fired it.")
    job = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        # Pruning deletes old jobs in bulk; the tick keeps the id as history.
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="schedule_ticks",
    )
    error = models.TextField(blank=True, help_text="Why no job was enqueued, if none was.")

    class Meta:
        ordering = ["-fire_at"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "fire_at"], name="pgjobs_tick_once"),
            times_in_range("pgjobs_tick_times_in_range", "fire_at", "fired_at"),
        ]
        indexes = [models.Index(fields=["fired_at"], name="pgjobs_tick_fired_at")]

    def __str__(self) -> str:
        return f"{self.schedule_id} @ {self.fire_at.isoformat()}"


class SchedulerProcess(models.Model):
    """One running ``runscheduler`` process; it updates its row on every pass."""

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    clock_skew = models.FloatField(
        null=True,
        blank=True,
        help_text="Seconds this host's clock is ahead of the database's (negative: behind), "
        "as measured at the last pass. Ticks fire by the database's clock regardless.",
    )

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "scheduler process"
        verbose_name_plural = "scheduler processes"
        constraints = [
            times_in_range("pgjobs_schedulerprocess_times_in_range", "started_at", "heartbeat_at")
        ]

    def __str__(self) -> str:
        return f"scheduler {self.pk} ({self.host}:{self.pid})"


class Routine(models.Model):
    """A maintenance routine's timetable (prune, rescue), shared by all schedulers
    so that each routine runs once per interval, not once per scheduler."""

    name = models.CharField(max_length=63, primary_key=True)
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "maintenance routine"
        constraints = [
            times_in_range("pgjobs_routine_times_in_range", "next_run_at", nullable=["last_run_at"])
        ]

    def __str__(self) -> str:
        return self.name


# -- connectors and API tokens (issue 6) -----------------------------------------------


class Connector(models.Model):
    """A named configuration of an external system that jobs use, loaded at run time.

    ``config`` holds the plain settings of its kind; secrets live encrypted in
    ``encrypted_secrets`` (see ``django_pgjobs.secrets``) with only their names
    in clear, so nothing here renders a secret by accident.
    """

    name = models.CharField(
        max_length=100,
        unique=True,
        help_text="What jobs name it by: letters, digits, '_', '-', '.' or ':'.",
    )
    kind = models.CharField(max_length=50)
    description = models.TextField(blank=True)
    config = ReadableJSONField(default=dict, blank=True)
    concurrency = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most jobs using this connector at once across all workers; empty = no limit.",
    )
    rate_limit = rate_limit_field("jobs using this connector")
    rate_period = rate_period_field()
    # Set when the service answered "too many requests" / "unavailable" with a
    # Retry-After: every job using the connector waits until then (connectors/runtime.py).
    throttled_until = models.DateTimeField(null=True, blank=True, editable=False)
    encrypted_secrets = models.TextField(blank=True, default="", editable=False)
    secret_names = ReadableJSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(name__regex=NAME_PATTERN), name="pgjobs_connector_name_valid"
            ),
            models.CheckConstraint(
                condition=Q(concurrency__isnull=True) | Q(concurrency__gte=1),
                name="pgjobs_connector_concurrency_positive",
            ),
            times_in_range("pgjobs_connector_times_in_range", "created_at", "updated_at"),
            times_in_range("pgjobs_connector_throttled_in_range", nullable=["throttled_until"]),
            rate_limit_valid("pgjobs_connector_rate_limit_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        secrets = sorted(names_in(self.secret_names))
        return f"<Connector {self.name!r} kind={self.kind!r} secrets={secrets}>"

    def save(self, **kwargs: Any) -> None:
        """Save; refuses (ValidationError) what the table can't hold, even without
        full_clean(), rather than leave it to the database to refuse with an error, and
        a config its kind refuses to be written (``check_written``: a credential in
        plain text). A field not read (``shown.within``: too large) is left as stored."""
        self.check_storable()
        unread = unread_fields(self)
        written = kwargs.get("update_fields")
        if "config" not in unread and (written is None or "config" in written):
            from .connectors.registry import check_written

            check_written(self)  # a credential in the plain config, shown in the admin
        save_read_fields(self, kwargs, unread)
        super().save(**kwargs)

    def clean(self) -> None:
        from .connectors.registry import validate_connector

        self.check_storable()
        if "config" not in unread_fields(self):  # its kind's check needs the whole config
            validate_connector(self)

    def check_storable(self) -> None:
        """ValidationError per field for a name no job can name, text with a NUL or a
        lone surrogate, a concurrency that is no whole number from 1 to 2**31 - 1, a
        config that is no JSON object PostgreSQL can store or larger than a job reads
        (``store.size_problem``: every job using it failed), or secret
        names (``set_secrets``' keys, stored as they are) it can't store. (Of any shape:
        a row written by SQL with odd ones is still saved by the admin, which has no
        field for them.)"""
        from django.core.exceptions import ValidationError

        from .connectors.store import CONNECTOR_NAME, config_size, size_problem

        errors: dict[str, str] = {}
        if not isinstance(self.name, str) or not CONNECTOR_NAME.match(self.name):
            errors["name"] = "1-100 letters, digits, '_', '-', '.' or ':'"
        for field, length in (("kind", 50), ("description", None)):
            value = getattr(self, field)
            if length is None and not isinstance(value, str):  # of any length
                errors[field] = (
                    f"must be a string, not {type(value).__name__} {limits.shown(value)}"
                )
            elif not isinstance(value, str) or (length and not 0 < len(value) <= length):
                errors[field] = f"must be a string of 1 to {length} characters"
            elif problem := limits.text_problem(value):
                errors[field] = problem
        problem = payload.shaped_problem(self.config, "config", dict)
        if problem or (problem := size_problem(config_size(self.config), "JSON")):
            errors["config"] = problem
        if problem := payload.problem(self.secret_names, "secret_names"):
            errors["secret_names"] = problem
        if self.concurrency is not None:  # the column's CHECK and its int range
            try:
                limits.whole_number(self.concurrency, "concurrency", 1, 2**31 - 1)
            except InvalidOption as error:
                errors["concurrency"] = error.problem
        errors.update(limits.rate_problems(self.rate_limit, self.rate_period))
        errors = {field: text for field, text in errors.items() if field not in unread_fields(self)}
        if errors:
            raise ValidationError(errors)

    def get_secrets(self) -> dict[str, Any]:
        """The secrets, decrypted. Read while a job runs (by ``get_connector``, or by a
        task off the row itself), they are masked from then on in whatever that job
        leaves behind: its error, its result, its log lines (``mask_in_running_job``)."""
        from . import secrets
        from .connectors.store import mask_in_running_job

        values = secrets.decrypt(self.encrypted_secrets, f"connector {self.name!r}")
        mask_in_running_job(self, values)
        return values

    def set_secrets(self, values: dict[str, Any]) -> None:
        """Replace every secret (not saved until ``save()``); {} removes them all.
        ValidationError, changing nothing, for values that are no dict of names to
        values (``_check_secrets``) or a value the kind can't use."""
        from .connectors.registry import secret_problems

        _check_secrets(values)
        secret_problems(self.kind, values)
        self._store_secrets(values)

    def update_secrets(self, changes: dict[str, Any], remove: Iterable[str] = ()) -> None:
        """Set some secrets and remove others, keeping the rest. ValidationError,
        changing nothing, as ``set_secrets``' for ``changes``, for a ``remove`` that is
        no list of names, and for a value the kind can't use (those kept are not judged)."""
        from .connectors.registry import secret_problems

        _check_secrets(changes)
        removed = _removed_names(remove)
        secret_problems(self.kind, changes)
        current = self.get_secrets() if self.encrypted_secrets else {}
        current.update(changes)
        for name in removed:
            current.pop(name, None)
        self._store_secrets(current)

    def _store_secrets(self, values: dict[str, Any]) -> None:
        from . import secrets
        from .connectors.store import size_problem

        encrypted = secrets.encrypt(values)
        if problem := size_problem(len(encrypted), "encrypted text"):
            _refuse_secrets(problem)
        self.encrypted_secrets = encrypted
        self.secret_names = sorted(values)
        for written in ("encrypted_secrets", "secret_names"):  # no longer kept as stored
            read_whole(self, written)


def _check_secrets(values: Any) -> None:
    """ValidationError (on ``secrets``) unless ``values`` is a dict of names (strings)
    to values JSON can hold: a list was stored as it was and failed each job using the
    connector, a name of another type failed sorting them (TypeError), a value JSON
    can't hold failed encrypting them. Any text is a value (it is stored encrypted)."""
    if not isinstance(values, dict):
        _refuse_secrets(f"must be a dict of secret names to values, not {type(values).__name__}")
    for name, value in values.items():
        if not isinstance(name, str):
            _refuse_secrets(
                f"names must be strings, not {type(name).__name__} {limits.shown(name)}"
            )
        try:
            json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            _refuse_secrets(f"{limits.shown(name)} is no value JSON can hold")


def _removed_names(remove: Any) -> list[str]:
    """``update_secrets``' ``remove`` as a list of names; ValidationError (on
    ``secrets``) for anything else: a string's letters were each taken for a name, and
    removed, and a name that is no string was dict.pop's TypeError, or removed nothing."""
    names = None
    if not isinstance(remove, str | bytes) and isinstance(remove, Iterable):
        names = list(remove)
    if names is None or not all(isinstance(name, str) for name in names):
        _refuse_secrets(f"remove must be a list of secret names, not {limits.shown(remove)}")
    return names


def _refuse_secrets(problem: str) -> NoReturn:
    from django.core.exceptions import ValidationError

    raise ValidationError({"secrets": problem})


class ConnectorSlot(models.Model):
    """One concurrency slot of a connector, taken by the job that runs with it.

    A slot is held while its row names a job that still executes under the same
    lease: a worker that dies frees its slots when its jobs are rescued, with no
    session state (works behind PgBouncer in transaction mode; connectors/runtime.py).
    """

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="+")
    slot = models.PositiveIntegerField()
    # No foreign key: a pruned job's row is a free slot, reused by the next taker.
    job_id = models.BigIntegerField()
    lease = models.UUIDField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connector", "slot"], name="pgjobs_connectorslot_one_per_slot"
            ),
        ]

    def __str__(self) -> str:
        return f"slot {self.slot} of connector {self.connector_id}: job {self.job_id}"


class TimesField(models.Field):
    """A ``timestamptz[]`` column, read and written as a list of aware datetimes
    (``django.contrib.postgres``' ArrayField would need that app installed)."""

    description = "A list of times"

    def db_type(self, connection: Any) -> str:
        return "timestamp with time zone[]"


class RateWindow(models.Model):
    """The recent starts under one rate limit (``ratelimits``): the time of each start
    within the limit's last period, by the database's clock."""

    scope = models.CharField(
        max_length=400,
        primary_key=True,
        help_text="queue:<name>, connector:<name> or key:<queue>/<key>.",
    )
    starts = TimesField(default=list, blank=True)
    expires_at = models.DateTimeField(
        help_text="When its newest start leaves the window: the row can go then."
    )

    class Meta:
        ordering = ["scope"]
        constraints = [times_in_range("pgjobs_ratewindow_times_in_range", "expires_at")]

    def __str__(self) -> str:
        return self.scope


class ApiToken(models.Model):
    """A bearer token of the HTTP API. Only its SHA-256 is stored; it is shown once."""

    name = models.CharField(max_length=100, help_text="Who or what uses it.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The token's first characters, to recognise it."
    )
    queues = ReadableJSONField(
        default=list,
        blank=True,
        help_text='Queues it may enqueue into, read and run; ["*"] for every queue.',
    )
    connectors = ReadableJSONField(
        default=list,
        blank=True,
        help_text='Connectors its jobs may name explicitly; ["*"] for every connector.',
    )
    can_enqueue = models.BooleanField(default=True, help_text="POST /jobs")
    can_read = models.BooleanField(default=True, help_text="GET /jobs/<id>")
    can_run = models.BooleanField(default=False, help_text="POST /jobs/run")
    active = models.BooleanField(default=True, help_text="Untick to revoke.")
    expires_at = models.DateTimeField(null=True, blank=True, validators=[limits.validate_time])
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"
        constraints = [
            times_in_range(
                "pgjobs_apitoken_times_in_range",
                "created_at",
                nullable=["expires_at", "last_used_at"],
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def save(self, **kwargs: Any) -> None:
        """Save; a scope not read, being too large (``shown.within``), stays as stored."""
        save_read_fields(self, kwargs, unread_fields(self))
        super().save(**kwargs)

    def allows_queue(self, queue: str) -> bool:
        queues = names_in(self.queues)
        return "*" in queues or queue in queues

    def allows_connector(self, name: str) -> bool:
        connectors = names_in(self.connectors)
        return "*" in connectors or name in connectors
