"""Prometheus metrics: queue gauges read from the database at scrape time, and the
exposition served by ``metrics_view`` (web processes) and ``runworker --metrics-port``.

``prometheus_client`` is an optional extra (``pip install "prometheus-client>=0.20"``, or
the ``prometheus`` extra of django-pgjobs); nothing here imports it until metrics are
asked for.

The gauges are read when Prometheus scrapes, through the indexes the admin's
dashboard counts from, so they are as fresh as the scrape and cost no work
between scrapes. Several processes (``--processes``, a multi-process web server)
share their counters through ``PROMETHEUS_MULTIPROC_DIR``, as prometheus_client
documents.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from . import conf, signals, stats
from .exceptions import DiscardJob, Snooze
from .models import Queue, Schedule

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .context import JobContext
    from .enqueue import JobSpec
    from .models import Job

logger = logging.getLogger(__name__)
#: The ``prometheus`` extra's requirement (pyproject.toml). The hint names it, not
#: ``django-pgjobs[prometheus]``: installed from a clone, pgjobs is not on PyPI to be found.
REQUIREMENT = "prometheus-client>=0.20"
INSTALL_HINT = f'metrics need prometheus_client: pip install "{REQUIREMENT}"'


def require_client() -> None:
    """Raise ``ImproperlyConfigured`` with the install command if prometheus_client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImproperlyConfigured(INSTALL_HINT) from None


class DatabaseCollector:
    """Gauges of the whole queue, read from the database when collected.

    A failed read yields ``pgjobs_database_up 0`` instead of raising, so that a
    scrape still returns this process's own counters while the database is away.
    """

    def __init__(self, using: str | None = None) -> None:
        self.using = using

    def describe(self) -> list[Any]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("pgjobs_database_up", "1 if the last read of the job tables worked.")
        took = GaugeMetricFamily(
            "pgjobs_database_read_seconds", "Time the job tables' gauges took to read."
        )
        started = time.perf_counter()
        try:
            families = list(self.read(timezone.now()))
        except DatabaseError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        took.add_metric([], time.perf_counter() - started)
        yield from (up, took, *families)

    def read(self, now: datetime) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        using = self.using or conf.get("DATABASE")
        jobs = GaugeMetricFamily(
            "pgjobs_queue_jobs",
            "Jobs of each queue in each unfinished state.",
            labels=["queue", "state"],
        )
        due = stats.oldest_due(now, using)
        rows = dict(Queue.objects.using(using).values_list("name", "paused"))
        counts = {(queue, state): n for queue, state, n in stats.depth_counts(using)}
        names = sorted(set(rows) | set(due) | set(conf.get("QUEUES")) | {q for q, _ in counts})
        oldest = GaugeMetricFamily(
            "pgjobs_queue_oldest_due_age_seconds",
            "How long the oldest job that could run now has waited (0 if none).",
            labels=["queue"],
        )
        paused = GaugeMetricFamily(
            "pgjobs_queue_paused", "1 if the queue is paused.", labels=["queue"]
        )
        for name in names:
            for state in stats.DEPTH_STATES:  # zeros too: a series that vanishes breaks graphs
                jobs.add_metric([name, state], counts.get((name, state), 0))
            since = due.get(name)
            waited = 0.0 if since is None else max(0.0, (now - since).total_seconds())
            oldest.add_metric([name], waited)
            paused.add_metric([name], 1 if rows.get(name) else 0)
        yield from (jobs, oldest, paused)
        yield from _worker_families(now, using)
        yield from _schedule_families(now, using)


def _worker_families(now: datetime, using: str) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    workers = GaugeMetricFamily(
        "pgjobs_worker_processes",
        "Worker processes by heartbeat: alive, or stale (presumed dead, awaiting rescue).",
        labels=["status"],
    )
    summary = stats.worker_summary(now, using)
    workers.add_metric(["alive"], summary["live"])
    workers.add_metric(["stale"], summary["stale"])
    yield workers


def _schedule_families(now: datetime, using: str) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    label = ["schedule"]
    last = GaugeMetricFamily(
        "pgjobs_schedule_last_fire_timestamp_seconds",
        "When the schedule's last tick was due (Unix time).",
        labels=label,
    )
    planned = GaugeMetricFamily(
        "pgjobs_schedule_next_fire_timestamp_seconds",
        "When the schedule's next tick is planned (Unix time).",
        labels=label,
    )
    lag = GaugeMetricFamily(
        "pgjobs_schedule_lag_seconds",
        "How late the schedule's planned tick is: 0 until it is due.",
        labels=label,
    )
    rows = (
        Schedule.objects.using(using)
        .filter(enabled=True)
        .values_list("name", "last_fire_at", "next_fire_at")
    )
    for name, last_fire_at, next_fire_at in rows:
        if last_fire_at is not None:
            last.add_metric([name], last_fire_at.timestamp())
        if next_fire_at is not None:
            planned.add_metric([name], next_fire_at.timestamp())
            lag.add_metric([name], max(0.0, (now - next_fire_at).total_seconds()))
    yield from (last, planned, lag)


# -- counters and durations: the metrics middleware --------------------------------------

#: Seconds: jobs run from milliseconds to an hour.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                    600, 1800, 3600)  # fmt: skip

_job_metrics: dict[str, Any] = {}
_job_metrics_lock = threading.Lock()


def job_metrics() -> dict[str, Any]:
    """The counters and the histogram, made once per process in the default registry."""
    with _job_metrics_lock:
        if not _job_metrics:
            from prometheus_client import Counter, Histogram

            labels = ["queue", "task"]
            _job_metrics.update(
                enqueued=Counter("pgjobs_jobs_enqueued", "Jobs enqueued (committed).", labels),
                completed=Counter("pgjobs_jobs_completed", "Attempts that returned.", labels),
                failed=Counter(
                    "pgjobs_jobs_failed", "Attempts that raised (retried or discarded).", labels
                ),
                discarded=Counter(
                    "pgjobs_jobs_discarded", "Jobs discarded after a failed attempt.", labels
                ),
                rescued=Counter(
                    "pgjobs_jobs_rescued", "Jobs taken back from a worker that died.", labels
                ),
                duration=Histogram(
                    "pgjobs_job_duration_seconds",
                    "Time each attempt ran, by how it ended (completed or failed).",
                    [*labels, "outcome"],
                    buckets=DURATION_BUCKETS,
                ),
            )
        return _job_metrics


class PrometheusMiddleware:
    """``PGJOBS["MIDDLEWARE"]`` entry ``"django_pgjobs.metrics.PrometheusMiddleware"``:
    counts jobs enqueued, completed, failed, discarded and rescued, per queue and
    task, and times each attempt. ``runworker --metrics-port`` adds it by itself.
    """

    def __init__(self) -> None:
        try:
            require_client()
        except ImproperlyConfigured as error:
            raise ImproperlyConfigured(f"PrometheusMiddleware: {error}") from None
        self.metrics = job_metrics()
        #: (queue, task) -> the completed counter and duration histogram of those labels.
        self._completed: dict[tuple[str, str], tuple[Any, Any]] = {}
        for signal in (signals.job_retrying, signals.job_discarded):
            signal.connect(_count_rescued, dispatch_uid="pgjobs-metrics-rescued")

    def enqueue(
        self, specs: list[JobSpec], call_next: Callable[[list[JobSpec]], list[Job]]
    ) -> list[Job]:
        jobs = call_next(specs)
        added = Counter(
            (job.queue, job.task) for job in jobs if not getattr(job, "is_duplicate", False)
        )
        if added:
            enqueued = self.metrics["enqueued"]

            def count() -> None:  # after the commit: raised, the caller's commit raised
                with _counting("jobs enqueued"):
                    for (queue, task), n in added.items():
                        enqueued.labels(queue, task).inc(n)

            transaction.on_commit(count, using=conf.get("DATABASE"))
        return jobs

    def execute(self, context: JobContext, call_next: Callable[[], Any]) -> Any:
        job, metrics = context.job, self.metrics
        started = time.perf_counter()
        try:
            result = call_next()
        except Snooze:
            raise  # it never started: it runs again, its attempt uncounted
        except BaseException as error:
            if not context.cancelled:
                # Raised here, a counter's error stood in for the task's own.
                with _counting("the failed attempt", job):
                    labels = (job.queue, job.task)
                    metrics["failed"].labels(*labels).inc()
                    if isinstance(error, DiscardJob) or job.attempt >= job.max_attempts:
                        metrics["discarded"].labels(*labels).inc()
                    took = time.perf_counter() - started
                    metrics["duration"].labels(*labels, "failed").observe(took)
            raise
        # Raised here, a counter's error lost the job's result, and the job ran again.
        with _counting("the completed attempt", job):
            self._count_completed(job, time.perf_counter() - started)
        return result

    def _count_completed(self, job: Job, took: float) -> None:
        key = (job.queue, job.task)
        children = self._completed.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per key
            children = (self.metrics["completed"].labels(*key),
                        self.metrics["duration"].labels(*key, "completed"))  # fmt: skip
            self._completed[key] = children
        children[0].inc()
        children[1].observe(took)


class _counting:
    """``with _counting(what[, job]):`` a counter's ``Exception`` goes no further than
    ``_counting_failed``. "of job N" is added to ``what`` only once it failed: on every
    attempt's way, no string is built (nor a generator, as contextlib's would be)."""

    __slots__ = ("job", "what")

    def __init__(self, what: str, job: Job | None = None) -> None:
        self.what = what
        self.job = job

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        if kind is None or not issubclass(kind, Exception):
            return False  # a KeyboardInterrupt, say, goes through
        _counting_failed(self.what if self.job is None else f"{self.what} of job {self.job.pk}")
        return True


#: Whether this process said that a counter failed (said once: it fails for every job).
_failure_said = False


def _counting_failed(what: str) -> None:
    """A counter or histogram raised (a full ``PROMETHEUS_MULTIPROC_DIR``, say): the
    job and the enqueue go on as if it had counted. Logged once per process with its
    traceback, then at debug level."""
    global _failure_said
    if _failure_said:
        logger.debug("metrics: counting %s failed", what, exc_info=True)
        return
    _failure_said = True
    logger.exception(
        "metrics: counting %s failed; jobs run on uncounted (said once per process)", what
    )


def _count_rescued(sender: Any, job: Job, rescued: bool = False, **kwargs: Any) -> None:
    if rescued:
        job_metrics()["rescued"].labels(job.queue, job.task).inc()


# -- exposition -------------------------------------------------------------------------


def process_registry() -> CollectorRegistry:
    """What this process exposes besides the gauges: its default registry, or with
    ``PROMETHEUS_MULTIPROC_DIR`` set, the counters of every process writing there."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The text Prometheus scrapes, and its content type (OpenMetrics if ``accept`` asks)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):
        # An OpenMetrics version that is no number (version=abc): prometheus_client
        # compares its parts with numbers. The text format every scraper reads.
        encoder, content_type = choose_encoder("")
    database = CollectorRegistry()
    database.register(DatabaseCollector())
    body = encoder(process_registry()) + encoder(database)
    if content_type.startswith("application/openmetrics-text"):
        # One document: only the last part keeps its "# EOF".
        body = body.replace(b"# EOF\n", b"", 1)
    return body, content_type


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``path("metrics", metrics_view)``: expose the metrics from a web process.

    Anyone who can reach it reads queue, task and schedule names: serve it on an
    internal address, or wrap it in your own access check.
    """
    require_client()
    body, content_type = exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
