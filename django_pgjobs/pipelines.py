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
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from django.db import transaction

from . import conf, dependencies, limits, payload
from .context import current_job
from .enqueue import JobSpec, insert_jobs
from .exceptions import InvalidOption
from .models import Job

Stage = JobSpec | Sequence[JobSpec]


def enqueue_pipeline(*stages: Stage, name: str | None = None) -> list[list[Job]]:
    """Enqueue the stages in one transaction; returns the jobs of each stage.

    ``name`` (default: a random id) is stored as ``meta["pipeline"]`` on every job:
    text of 1 to 255 characters, as a task's name (``limits.text``), else
    InvalidOption. Unchecked, ``name=5`` or a list was stored as given, and a name of
    any length on every job of the pipeline. An empty one, a random id once, is
    refused too: most likely a caller's bug (a setting left empty), whose jobs could
    not be found by the name it meant.

    A spec whose own ``meta["pipeline"]`` is another name is refused (InvalidOption
    naming ``meta``), not silently relabelled: its jobs were found under no such name.
    """
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    if name == "":
        raise InvalidOption("name", "must not be empty: leave it out (or None) for a random id")
    pipeline = uuid.uuid4().hex[:12] if name is None else limits.text(name, "name")
    whose = f"the pipeline's name ({'a random id' if name is None else limits.shown(pipeline)})"
    created: list[list[Job]] = []
    with transaction.atomic(using=conf.get("DATABASE")):
        previous: list[Job] = []
        for number, stage in enumerate(stages, start=1):
            specs = _specs(stage, f"pipeline stage {number}")
            if not specs:
                raise ValueError("a pipeline stage needs at least one job")
            jobs = insert_jobs(
                [
                    replace(
                        spec,
                        depends_on=[*spec.depends_on, *previous],
                        meta=_in_pipeline(
                            spec, pipeline, whose, "pass name= instead, or leave the key out"
                        ),
                    )
                    for spec in specs
                ]
            )
            created.append(jobs)
            previous = jobs
    return created


def _in_pipeline(spec: JobSpec, pipeline: Any, whose: str, instead: str) -> dict[str, Any]:
    """``spec``'s meta labelled with ``pipeline``; InvalidOption if it holds another
    ``pipeline`` of its own (``whose``: the name that would replace it, in words;
    ``instead``: what to do). The same name is no replacement: kept."""
    meta = payload.given_meta(spec.meta)
    if "pipeline" in meta and meta["pipeline"] != pipeline:
        own = limits.shown(meta["pipeline"])
        raise InvalidOption(
            "meta", f"key 'pipeline' ({own}) would be replaced by {whose}: {instead}"
        )
    return {**meta, "pipeline": pipeline}


def _specs(stage: Any, where: str) -> list[JobSpec]:
    """The JobSpecs of a stage (one spec, its dict, or a sequence of them), or TypeError
    saying which: ``"abc"`` was read as three jobs, and ``5`` or ``None`` among them
    raised AttributeError."""
    if isinstance(stage, JobSpec | dict):
        stage = [stage]
    elif isinstance(stage, str | bytes) or not isinstance(stage, Iterable):
        raise TypeError(
            f"{where}: expected a JobSpec or a list of them, not {type(stage).__name__}"
        )
    specs = []
    for index, item in enumerate(stage):
        if isinstance(item, dict):
            item = JobSpec(**item)
        if not isinstance(item, JobSpec):
            raise TypeError(
                f"{where}, job {index}: expected a JobSpec (task.spec(...)) or its dict, "
                f"not {type(item).__name__}"
            )
        specs.append(item)
    return specs


def add_to_running_pipeline(specs: Sequence[JobSpec]) -> list[Job]:
    """From inside a running task: enqueue ``specs`` and make the job's dependents
    wait for them too (e.g. split work into many parallel jobs). They carry the job's
    pipeline name; a spec whose own ``meta["pipeline"]`` is another is refused."""
    context = current_job()
    if context is None:
        raise RuntimeError("add_jobs can only be called from a running job")
    parent = context.job
    # A meta that is no object, or a pipeline that is no name (written by SQL): no
    # pipeline to carry, rather than AttributeError from the task's add_jobs.
    meta = parent.meta if isinstance(parent.meta, dict) else {}
    pipeline = meta.get("pipeline") if isinstance(meta.get("pipeline"), str) else None
    whose = f"the running job's pipeline ({limits.shown(pipeline)})"
    specs = _specs(specs, "add_jobs")
    with transaction.atomic(using=parent._state.db or conf.get("DATABASE")):
        jobs = insert_jobs(
            [
                replace(
                    spec,
                    meta=_in_pipeline(spec, pipeline, whose, "leave the key out"),
                )
                if pipeline
                else spec
                for spec in specs
            ]
        )
        dependencies.extend_dependents(parent, jobs)
    return jobs
