"""OpenTelemetry tracing: a span for each enqueue and for each job's run, linked.

``PGJOBS["MIDDLEWARE"]`` entry ``"django_pgjobs.tracing.TracingMiddleware"``; needs
``opentelemetry-api`` (``pip install "opentelemetry-api>=1.24"``) and, to send the
spans anywhere, the SDK or an agent configured as OpenTelemetry documents.

At enqueue, a ``send <queue>`` span (kind PRODUCER) wraps the insert, and its trace
context is stored with each job, in ``job.meta["otel"]`` (W3C ``traceparent``, through
the configured propagator). A worker runs the job inside a ``process <queue>`` span
(kind CONSUMER) that starts when the job was claimed and ends with its outcome, and
links to the enqueue span. Attribute names follow OpenTelemetry's messaging semantic
conventions.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from .exceptions import Snooze

if TYPE_CHECKING:
    from .context import JobContext
    from .enqueue import JobSpec
    from .models import Job

#: Where a job keeps the trace context of its enqueue.
META_KEY = "otel"
SYSTEM = "pgjobs"
#: The ``opentelemetry`` extra's requirement (pyproject.toml), named as metrics.py names its.
REQUIREMENT = "opentelemetry-api>=1.24"
INSTALL_HINT = f'tracing needs opentelemetry-api: pip install "{REQUIREMENT}"'


class TracingMiddleware:
    """Spans for enqueue and for each job's run. The run's span links to the enqueue's;
    a subclass with ``as_child = True`` makes it the enqueue span's child instead (one
    trace from the request to the job, however long the job waited)."""

    as_child = False

    def __init__(self) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ImproperlyConfigured(f"TracingMiddleware: {INSTALL_HINT}") from None
        self.tracer = trace.get_tracer("django_pgjobs")

    def enqueue(
        self, specs: list[JobSpec], call_next: Callable[[list[JobSpec]], list[Job]]
    ) -> list[Job]:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        attributes = {"messaging.system": SYSTEM, "messaging.operation.type": "send",
                      "messaging.operation.name": "send"}  # fmt: skip
        if len(specs) > 1:
            attributes["messaging.batch.message_count"] = len(specs)
        with self.tracer.start_as_current_span(
            "send", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            # Without an SDK (the API's no-op tracer) nothing is injected: an empty
            # "otel" in every job's meta would carry nothing.
            for spec in specs if carrier else ():
                if isinstance(spec.meta, dict):  # any other meta is refused by the checks
                    spec.meta = {**spec.meta, META_KEY: carrier}
            jobs = call_next(specs)
            queues = {job.queue for job in jobs}
            if len(queues) == 1:
                (queue,) = queues
                span.update_name(f"send {queue}")
                span.set_attribute("messaging.destination.name", queue)
            if len(jobs) == 1:
                span.set_attribute("messaging.message.id", str(jobs[0].pk))
                span.set_attribute("pgjobs.task", jobs[0].task)
            return jobs

    def execute(self, context: JobContext, call_next: Callable[[], Any]) -> Any:
        from opentelemetry.trace import Link, SpanKind, StatusCode

        job = context.job
        enqueued = enqueue_context(job)
        links = [Link(enqueued)] if enqueued is not None and not self.as_child else []
        parent = None
        if enqueued is not None and self.as_child:
            from opentelemetry.trace import NonRecordingSpan, set_span_in_context

            parent = set_span_in_context(NonRecordingSpan(enqueued))
        claimed_at = getattr(job, "attempted_at", None)
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            start_time=int(claimed_at.timestamp() * 1e9) if claimed_at else None,
            attributes=_job_attributes(job),
            # Recorded below, masked: the exception may echo the job's secrets.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.add_event("started")  # the span began when the job was claimed
            try:
                result = call_next()
            except Snooze:
                span.set_attribute("pgjobs.outcome", "snoozed")
                span.set_status(StatusCode.UNSET)
                raise
            except BaseException as error:
                span.set_attribute("pgjobs.outcome", "failed")
                _record_failure(span, error, context)
                raise
            span.set_attribute("pgjobs.outcome", "completed")
            return result


def _record_failure(span: Any, error: BaseException, context: JobContext) -> None:
    """What ``record_exception`` records, with the job's secrets and credentials masked
    as in its stored error (docs/security.md)."""
    from opentelemetry.trace import StatusCode

    message = context.mask(str(error))
    span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {message}")
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(error).__module__}.{type(error).__qualname__}",
            "exception.message": message,
            "exception.stacktrace": context.mask("".join(traceback.format_exception(error))),
            "exception.escaped": True,
        },
    )


def enqueue_context(job: Job) -> Any:
    """The span context stored with ``job`` at enqueue, or None (none stored, or a
    stored value of any other shape: a row never breaks the run)."""
    from opentelemetry import propagate, trace

    meta = job.meta if isinstance(job.meta, dict) else {}
    stored = meta.get(META_KEY)
    if not isinstance(stored, dict):
        return None
    carrier = {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
    try:
        found = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    except Exception:  # a propagator that chokes on a hand-written value
        return None
    return found if found.is_valid else None


def _job_attributes(job: Job) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": str(job.pk),
        "pgjobs.task": job.task,
        "pgjobs.attempt": job.attempt,
        "pgjobs.max_attempts": job.max_attempts,
    }
    if job.worker_id is not None:
        attributes["messaging.client.id"] = str(job.worker_id)
    return attributes
