"""Turning enqueue calls into job rows, inside the caller's transaction."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import conf, copying, db, dependencies, payload, queues, signals
from .connectors.store import check_known as check_connector
from .states import ACTIVE, JobState
from .tasks import Task, get_task

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
    return JobBuilder(now).build(spec)


#: What a job's options decide: its fields but the arguments, meta and mutable
#: defaults, and its registered task.
Shape = tuple[dict[str, Any], Task[Any, Any]]


class JobBuilder:
    """``build_job`` for a batch. What depends only on a job's options, not on its
    arguments (the registered task, whether the queue exists, its default
    attempts, the checks of priority, run_at, connector) is worked out once per
    batch for each set of options: the jobs of a large batch mostly share theirs,
    and then each costs little more than a copy of a dict."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.max_payload = conf.get("MAX_PAYLOAD_BYTES")
        self.default_queue = conf.get("DEFAULT_QUEUE")
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._queue_attempts: dict[Any, int] = {}
        self._connectors: set[Any] = set()
        # options -> (the fields they decide, the registered task)
        self._shapes: dict[tuple[Any, ...], Shape] = {}

    def _task(self, name: str) -> Task[Any, Any]:
        registered = self._tasks.get(name)
        if registered is None:
            registered = self._tasks[name] = get_task(name)
        return registered

    def _queue(self, name: Any) -> tuple[str, int]:
        """The checked queue name and its default max_attempts."""
        attempts = self._queue_attempts.get(name)
        if attempts is None:
            queues.check_known(name)
            attempts = self._queue_attempts[name] = _queue_max_attempts(name)
        return name, attempts

    def _connector(self, name: Any) -> str:
        if name not in self._connectors:
            check_connector(name)
            self._connectors.add(name)
        return name

    def build(self, spec: JobSpec) -> Job:
        return self.make(spec, self.check(spec))

    def check(self, spec: JobSpec) -> Shape:
        """Validate ``spec``; what ``make`` needs of its options."""
        options = (
            spec.task,
            spec.queue,
            spec.priority,
            spec.run_at,
            spec.max_attempts,
            spec.unique_key,
            spec.connector,
            spec.timeout,
            spec.pass_results,
            spec.on_dependency_failure,
            # 1, 1.0 and True are equal keys: each type is checked on its own.
            type(spec.priority),
            type(spec.max_attempts),
            type(spec.timeout),
        )
        shape = self._shapes.get(options)
        if shape is None:
            shape = self._shapes[options] = self._shape(spec)
        payload.check(spec.args, spec.kwargs, self.max_payload)
        if spec.meta:
            payload.check([], {**spec.meta, **shape[0]["meta"]}, self.max_payload)
        return shape

    def make(self, spec: JobSpec, shape: Shape) -> Job:
        """The unsaved Job of a checked ``spec``."""
        decided, registered = shape
        fields = dict(decided)
        fields["args"] = list(spec.args)
        fields["kwargs"] = dict(spec.kwargs)
        fields["meta"] = {**spec.meta, **decided["meta"]}  # the options' flags win
        if not spec.unique_key:  # a unique task derives it from the arguments
            fields["unique_key"] = registered.unique_key(spec.args, spec.kwargs)
        job_class, _, computed = _job_template()
        for name, default in computed:  # mutable defaults: one each
            if name not in fields:
                fields[name] = default()
        return job_class.from_fields(fields)

    def _shape(self, spec: JobSpec) -> Shape:
        """Check a job's options; the fields they decide (every field but the
        arguments, the meta the caller gave and mutable defaults)."""
        registered = self._task(spec.task)
        queue, queue_attempts = self._queue(spec.queue or registered.queue or self.default_queue)
        if spec.on_dependency_failure not in dependencies.ON_FAILURE:
            raise ValueError(
                f"on_dependency_failure must be one of {dependencies.ON_FAILURE}, "
                f"not {spec.on_dependency_failure!r}"
            )
        connector = spec.connector or registered.connector
        if connector is not None:
            connector = self._connector(connector)
        max_attempts = spec.max_attempts or registered.max_attempts or queue_attempts
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        priority = spec.priority if spec.priority is not None else (registered.priority or 0)
        if not -32768 <= priority <= 32767:
            raise ValueError(f"priority {priority} is outside -32768..32767")
        now = self.now
        if spec.run_at is not None and timezone.is_naive(spec.run_at):
            raise ValueError("run_at must be timezone-aware")
        run_at = spec.run_at or now
        flags: dict[str, Any] = {}
        if spec.pass_results:
            flags["pass_results"] = True
        if spec.on_dependency_failure != "cancel":
            flags["on_dependency_failure"] = spec.on_dependency_failure
        fields = dict(_job_template()[1])  # the constant defaults, then what the options say
        fields["task"] = registered.name
        fields["queue"] = queue
        fields["priority"] = priority
        fields["max_attempts"] = max_attempts
        fields["timeout"] = spec.timeout if spec.timeout is not None else registered.timeout
        fields["run_at"] = run_at
        fields["created_at"] = now
        fields["state"] = JobState.SCHEDULED if run_at > now else JobState.AVAILABLE
        fields["unique_key"] = spec.unique_key or None
        fields["meta"] = flags
        fields["connector"] = connector
        return fields, registered


@functools.cache
def _job_template() -> tuple[type[Job], dict[str, Any], list[tuple[str, Any]]]:
    """Job, and its field defaults: {attname: value} of the constant ones, and
    (attname, callable) of those computed for each job. Looked up once: even
    the import of Job cost a large batch a microsecond per job. Built without
    ``Model.__init__`` (``Job.from_fields``): a tenth of the cost."""
    from .models import Job

    constant, computed = {}, []
    for model_field in Job._meta.concrete_fields:
        default = model_field.default if model_field.has_default() else model_field.get_default()
        if callable(default):
            computed.append((model_field.attname, default))
        else:
            constant[model_field.attname] = default
    return Job, constant, computed


def _queue_max_attempts(queue: str) -> int:
    declared = conf.get("QUEUES").get(queue, {}).get("max_attempts")
    return declared or conf.get("MAX_ATTEMPTS")


def insert_jobs(specs: Sequence[JobSpec | dict[str, Any]]) -> list[Job]:
    """Insert jobs (each a JobSpec or its dict) with one INSERT or COPY; jobs with
    a unique_key go one by one.

    Jobs with dependencies add a locking read of the dependencies and an
    INSERT of the edges, in one transaction with the jobs.
    """
    using = conf.get("DATABASE")
    builder = JobBuilder(timezone.now())
    now = builder.now
    with _no_cyclic_gc(len(specs) >= COPY_AT_LEAST):
        specs = [s if isinstance(s, JobSpec) else JobSpec(**s) for s in specs]
        shapes = [builder.check(spec) for spec in specs]  # nothing is written before this
        # A large batch without dependencies or keys is built while COPY streams it.
        streamed = len(specs) >= COPY_AT_LEAST and not any(
            spec.depends_on or spec.unique_key or shape[1].derives_keys
            for spec, shape in zip(specs, shapes, strict=True)
        )
        if streamed:
            jobs = _copy_in(specs, shapes, builder, using)
        else:
            jobs = [builder.make(spec, shape) for spec, shape in zip(specs, shapes, strict=True)]
    if not streamed:
        _insert_built(specs, jobs, using, now)
    if signals.job_enqueued.receivers:  # a send per job costs a large batch even unheard
        from .models import Job

        for job in jobs:
            if not getattr(job, "is_duplicate", False):
                signals.job_enqueued.send(sender=Job, job=job)
    return jobs


def _insert_built(specs: list[JobSpec], jobs: list[Job], using: str, now: datetime) -> None:
    """Insert built jobs: plain ones in one statement, keyed ones one by one, the
    dependency edges after them (in one transaction if there are any of those)."""
    wanted = [dependencies.job_ids(spec.depends_on) if spec.depends_on else [] for spec in specs]
    from .models import JobDependency

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


@contextlib.contextmanager
def _no_cyclic_gc(pause: bool) -> Iterator[None]:
    """Pause the cycle collector while a large batch of jobs is built (a plain one
    is built while it is copied in, so that too).

    Each job is a few new containers, none of them garbage, so the collector
    ran over and over through a growing heap for nothing: half the time of
    building 10,000 jobs. Reference counting still frees what is dropped;
    the collector's previous state is restored.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


#: Batches from this size on are loaded with COPY: two round trips instead of one,
#: but a third of the server's work and of ours per job.
COPY_AT_LEAST = 100


def _insert_many(jobs: list[Job], using: str) -> None:
    """Save new jobs: COPY for large batches, else one INSERT of a JSON array
    (``sql/insert_jobs.sql``).

    Django's ``bulk_create`` spends most of a large batch compiling one
    parameter per field per row; one JSON document per batch costs a fraction.
    """
    if len(jobs) >= COPY_AT_LEAST:
        _copy(jobs, len(jobs), using)
    else:
        from .models import Job

        names = [(f.attname, f.column) for f in Job._meta.concrete_fields if not f.primary_key]
        rows = db.as_json([{column: job.__dict__[name] for name, column in names} for job in jobs])
        ids = sorted(row["id"] for row in db.fetch_dicts("insert_jobs", {"rows": rows}, using))
        for job, pk in zip(jobs, ids, strict=True):
            job.id = pk
    for job in jobs:
        job._state.adding = False
        job._state.db = using


def _copy_in(
    specs: list[JobSpec], shapes: list[Shape], builder: JobBuilder, using: str
) -> list[Job]:
    """Insert a plain batch of checked specs with one COPY, building each job as its
    row streams out: PostgreSQL stores one chunk of rows while the next is built.
    (Checked beforehand, no job fails to build half-way through.)"""
    jobs: list[Job] = []

    def built() -> Iterator[Job]:
        for spec, shape in zip(specs, shapes, strict=True):
            job = builder.make(spec, shape)
            job._state.adding, job._state.db = False, using
            jobs.append(job)
            yield job

    _copy(built(), len(specs), using)
    return jobs


def _copy(jobs: Iterable[Job], count: int, using: str) -> None:
    """COPY ``count`` new jobs in, numbered from the sequence (sql/copy_jobs.sql)."""
    ids = sorted(db.fetch_dicts("next_job_ids", {"count": count}, using)[0]["ids"])

    def numbered() -> Iterator[Job]:
        for job, pk in zip(jobs, ids, strict=True):
            job.id = pk
            yield job

    db.copy_text("copy_jobs", copying.lines(numbered()), using)


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
