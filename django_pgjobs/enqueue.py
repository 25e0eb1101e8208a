"""Turning enqueue calls into job rows, inside the caller's transaction."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import conf, db, dependencies, payload, queues, signals
from .connectors.store import check_known as check_connector
from .states import ACTIVE, JobState
from .tasks import get_task

if TYPE_CHECKING:
    from .models import Job


@dataclass
class JobSpec:
    """What a caller asks for; unset options come from the task, then the queue, then settings."""

    task: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    connector: str | None = None
    depends_on: Sequence[Any] = ()
    timeout: float | None = None
    # Pipelines: hand the dependencies' results to the task as ``results=[...]``.
    pass_results: bool = False
    # What a failed (discarded/cancelled) dependency does to this job: "cancel" or "run".
    on_dependency_failure: str = "cancel"
    # Free-form labels stored in Job.meta (e.g. {"pipeline": "nightly"}).
    meta: dict[str, Any] = field(default_factory=dict)


def build_job(spec: JobSpec, now: datetime) -> Job:
    """Validate a spec and make the unsaved Job; raises before anything is written."""

    registered = get_task(spec.task)
    queue = queues.check_known(spec.queue or registered.queue or conf.get("DEFAULT_QUEUE"))
    payload.check(spec.args, spec.kwargs, conf.get("MAX_PAYLOAD_BYTES"))
    if spec.on_dependency_failure not in dependencies.ON_FAILURE:
        raise ValueError(
            f"on_dependency_failure must be one of {dependencies.ON_FAILURE}, "
            f"not {spec.on_dependency_failure!r}"
        )
    connector = spec.connector or registered.connector
    if connector is not None:
        connector = check_connector(connector)
    max_attempts = spec.max_attempts or registered.max_attempts or _queue_max_attempts(queue)
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    priority = spec.priority if spec.priority is not None else (registered.priority or 0)
    if not -32768 <= priority <= 32767:
        raise ValueError(f"priority {priority} is outside -32768..32767")
    if spec.run_at is not None and timezone.is_naive(spec.run_at):
        raise ValueError("run_at must be timezone-aware")
    run_at = spec.run_at or now
    meta = dict(spec.meta)
    if spec.pass_results:
        meta["pass_results"] = True
    if spec.on_dependency_failure != "cancel":
        meta["on_dependency_failure"] = spec.on_dependency_failure
    if meta:
        payload.check([], meta, conf.get("MAX_PAYLOAD_BYTES"))
    return _new_job(
        task=registered.name,
        queue=queue,
        args=list(spec.args),
        kwargs=dict(spec.kwargs),
        priority=priority,
        max_attempts=max_attempts,
        timeout=spec.timeout if spec.timeout is not None else registered.timeout,
        run_at=run_at,
        created_at=now,
        state=JobState.SCHEDULED if run_at > now else JobState.AVAILABLE,
        unique_key=spec.unique_key or registered.unique_key(spec.args, spec.kwargs),
        meta=meta,
        connector=connector,
    )


def _new_job(**values: Any) -> Job:
    """``Job(**values)``, built by position: Django's ``Model.__init__`` is several
    times faster that way, which shows in large ``enqueue_many`` batches."""
    from .models import Job

    return Job(
        *[
            values[name] if name in values else (default() if call else default)
            for name, call, default in _field_defaults()
        ]
    )


@functools.cache
def _field_defaults() -> list[tuple[str, bool, Any]]:
    """(attname, default is callable, default) of Job's fields, in field order."""
    from .models import Job

    found = []
    for model_field in Job._meta.concrete_fields:
        default = model_field.default if model_field.has_default() else model_field.get_default()
        found.append((model_field.attname, callable(default), default))
    return found


def _queue_max_attempts(queue: str) -> int:
    declared = conf.get("QUEUES").get(queue, {}).get("max_attempts")
    return declared or conf.get("MAX_ATTEMPTS")


def insert_jobs(specs: list[JobSpec]) -> list[Job]:
    """Insert jobs with one INSERT (jobs with a unique_key go one by one).

    Jobs with dependencies add a locking read of the dependencies and an
    INSERT of the edges, in one transaction with the jobs.
    """
    using = conf.get("DATABASE")
    now = timezone.now()
    jobs = [build_job(spec, now) for spec in specs]
    wanted = [dependencies.job_ids(spec.depends_on) for spec in specs]
    from .models import Job, JobDependency

    # A plain batch is one INSERT; dependencies and unique keys need a transaction.
    simple = not any(wanted) and all(job.unique_key is None for job in jobs)
    with contextlib.nullcontext() if simple else transaction.atomic(using=using):
        states = dependencies.lock(sorted({i for ids in wanted for i in ids}), using)
        for job, ids in zip(jobs, wanted, strict=True):
            if ids:
                dependencies.initial_state(job, {i: states[i] for i in ids}, now)
        plain = [job for job in jobs if job.unique_key is None]
        if plain:
            _insert_many(plain, using)
        for job, spec in zip(jobs, specs, strict=True):
            if job.unique_key is not None:
                _insert_unique(job, using, _unique_for(spec))
        edges = [
            edge
            for job, ids in zip(jobs, wanted, strict=True)
            if ids and not getattr(job, "is_duplicate", False)
            for edge in dependencies.edges_for(job, {i: states[i] for i in ids})
        ]
        if edges:
            JobDependency.objects.using(using).bulk_create(edges)
    for job in jobs:
        if not getattr(job, "is_duplicate", False):
            signals.job_enqueued.send(sender=Job, job=job)
    return jobs


def _insert_many(jobs: list[Job], using: str) -> None:
    """Save new jobs with one INSERT of a JSON array (``sql/insert_jobs.sql``).

    Django's ``bulk_create`` spends most of a large batch compiling one
    parameter per field per row; one JSON document per batch costs a fraction.
    """
    from .models import Job

    names = [(f.attname, f.column) for f in Job._meta.concrete_fields if not f.primary_key]
    rows = db.as_json([{column: job.__dict__[name] for name, column in names} for job in jobs])
    ids = sorted(row["id"] for row in db.fetch_dicts("insert_jobs", {"rows": rows}, using))
    for job, pk in zip(jobs, ids, strict=True):
        job.id = pk
        job._state.adding = False
        job._state.db = using


def _unique_for(spec: JobSpec) -> float | None:
    return get_task(spec.task).unique_for


def _insert_unique(job: Job, using: str, unique_for: float | None = None) -> None:
    """Insert, or if a job holds the key, turn ``job`` into that one.

    By default the key is held while a job with it is active (the partial
    unique index decides, race-free). With ``unique_for`` seconds it is held
    for that long after the holder was enqueued, whatever its state:
    enqueuers of one key then queue on a transaction-level advisory lock.
    """
    from .models import Job

    job.is_duplicate = False
    if unique_for is not None:
        db.fetch_dicts("lock_unique_key", {"key": job.unique_key}, using)
        since = job.created_at - timedelta(seconds=unique_for)
        existing = (
            Job.objects.using(using)
            .filter(unique_key=job.unique_key, created_at__gte=since)
            .order_by("-id")
            .first()
        )
        if existing is not None:
            job.__dict__.update(existing.__dict__)
            job.is_duplicate = True
            return
    try:
        with transaction.atomic(using=using):
            Job.objects.using(using).bulk_create([job])
    except IntegrityError:
        existing = (
            Job.objects.using(using)
            .filter(unique_key=job.unique_key, state__in=[str(s) for s in ACTIVE])
            .first()
        )
        if existing is None:  # the holder finished between our insert and this read
            raise
        job.__dict__.update(existing.__dict__)
        job.is_duplicate = True
