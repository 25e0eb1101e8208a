"""Multi-stage pipelines: fan-out, fan-in and ordered stages built on ``depends_on``.

::

    from django_pgjobs.pipelines import enqueue_pipeline

    stages = enqueue_pipeline(
        [fetch.spec(url) for url in urls],           # stage 1: N jobs in parallel
        combine.using(pass_results=True).spec(),     # stage 2: runs once all N completed,
                                                     #          called with results=[...]
        publish.spec(),                              # stage 3: after stage 2
    )

Every job of a stage depends on every job of the stage before. A running job
can add jobs to its pipeline with ``current_job().add_jobs([...])``: whatever
waits for it then also waits for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace

from django.db import transaction

from . import conf, dependencies
from .context import current_job
from .enqueue import JobSpec, insert_jobs
from .models import Job

Stage = JobSpec | Sequence[JobSpec]


def enqueue_pipeline(*stages: Stage, name: str | None = None) -> list[list[Job]]:
    """Enqueue the stages in one transaction; returns the jobs of each stage.

    ``name`` (default: a random id) is stored as ``meta["pipeline"]`` on every job.
    """
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    pipeline = name or uuid.uuid4().hex[:12]
    created: list[list[Job]] = []
    with transaction.atomic(using=conf.get("DATABASE")):
        previous: list[Job] = []
        for stage in stages:
            specs = [stage] if isinstance(stage, JobSpec) else list(stage)
            if not specs:
                raise ValueError("a pipeline stage needs at least one job")
            jobs = insert_jobs(
                [
                    replace(
                        spec,
                        depends_on=[*spec.depends_on, *previous],
                        meta={**spec.meta, "pipeline": pipeline},
                    )
                    for spec in specs
                ]
            )
            created.append(jobs)
            previous = jobs
    return created


def add_to_running_pipeline(specs: Sequence[JobSpec]) -> list[Job]:
    """From inside a running task: enqueue ``specs`` and make the job's dependents
    wait for them too (e.g. split work into many parallel jobs)."""
    context = current_job()
    if context is None:
        raise RuntimeError("add_jobs can only be called from a running job")
    parent = context.job
    pipeline = parent.meta.get("pipeline")
    with transaction.atomic(using=parent._state.db or conf.get("DATABASE")):
        jobs = insert_jobs(
            [
                replace(spec, meta={**spec.meta, "pipeline": pipeline}) if pipeline else spec
                for spec in specs
            ]
        )
        dependencies.extend_dependents(parent, jobs)
    return jobs
