"""Turning enqueue calls into job rows, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import conf, payload, queues, signals
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


def build_job(spec: JobSpec, now: datetime) -> Job:
    """Validate a spec and make the unsaved Job; raises before anything is written."""
    from .models import Job

    registered = get_task(spec.task)
    queue = queues.check_known(spec.queue or registered.queue or conf.get("DEFAULT_QUEUE"))
    payload.check(spec.args, spec.kwargs, conf.get("MAX_PAYLOAD_BYTES"))
    if spec.depends_on:
        raise NotImplementedError("depends_on is not supported yet")
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
    return Job(
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
        unique_key=spec.unique_key,
        connector=connector,
    )


def _queue_max_attempts(queue: str) -> int:
    declared = conf.get("QUEUES").get(queue, {}).get("max_attempts")
    return declared or conf.get("MAX_ATTEMPTS")


def insert_jobs(specs: list[JobSpec]) -> list[Job]:
    """Insert jobs with one INSERT (jobs with a unique_key go one by one)."""
    using = conf.get("DATABASE")
    now = timezone.now()
    jobs = [build_job(spec, now) for spec in specs]
    plain = [job for job in jobs if job.unique_key is None]
    from .models import Job

    if plain:
        Job.objects.using(using).bulk_create(plain)
    for job in jobs:
        if job.unique_key is not None:
            _insert_unique(job, using)
    for job in jobs:
        if not getattr(job, "is_duplicate", False):
            signals.job_enqueued.send(sender=Job, job=job)
    return jobs


def _insert_unique(job: Job, using: str) -> None:
    """Insert, or if an active job holds the key, turn ``job`` into that one."""
    from .models import Job

    job.is_duplicate = False
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
