"""OpenTelemetry: the enqueue's trace context travels with the job; its run links to it."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from django_pgjobs import Job
from django_pgjobs.states import JobState
from testproject.demo.tasks import add, always_fails

S = JobState
TRACING = "django_pgjobs.tracing.TracingMiddleware"

exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(exporter))
# Once per process; a test run sets up no other provider.
trace.set_tracer_provider(_provider)
tracer = trace.get_tracer("tests")


@pytest.fixture
def traced(settings):
    settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": [TRACING]}
    exporter.clear()


def finished(name: str) -> list:
    return [span for span in exporter.get_finished_spans() if span.name == name]


@pytest.mark.django_db
def test_enqueue_is_a_producer_span_whose_context_is_stored_with_the_job(traced):
    with tracer.start_as_current_span("POST /signup") as request:
        job = add.enqueue(1, 2)
    (send,) = finished("send default")
    assert send.kind == SpanKind.PRODUCER
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.attributes["messaging.system"] == "pgjobs"
    assert send.attributes["messaging.destination.name"] == "default"
    assert send.attributes["messaging.message.id"] == str(job.pk)
    stored = Job.objects.get(pk=job.pk).meta["otel"]["traceparent"]
    assert f"{send.context.trace_id:032x}-{send.context.span_id:016x}" in stored


@pytest.mark.django_db
def test_without_an_sdk_a_job_stores_no_empty_context(traced, monkeypatch):
    """The API alone (no SDK configured: its no-op tracer) has no context to give:
    each job's meta got an empty ``"otel": {}``."""
    from django_pgjobs.tracing import TracingMiddleware

    def no_sdk(self: TracingMiddleware) -> None:
        self.tracer = trace.NoOpTracer()

    monkeypatch.setattr(TracingMiddleware, "__init__", no_sdk)
    job = add.enqueue(1, 2)
    assert "otel" not in Job.objects.get(pk=job.pk).meta


@pytest.mark.django_db
def test_a_batch_is_one_span_with_its_count(traced):
    Job.enqueue_many([{"task": add.name, "args": [n, n]} for n in range(3)])
    (send,) = finished("send default")
    assert send.attributes["messaging.batch.message_count"] == 3


@pytest.mark.django_db
def test_a_run_is_a_consumer_span_linked_to_the_enqueue_with_its_outcome(traced, worker):
    with tracer.start_as_current_span("request"):
        ok = add.enqueue(1, 2)
        bad = always_fails.enqueue()
    worker.drain()
    sends = finished("send default")
    runs = {span.attributes["messaging.message.id"]: span for span in finished("process default")}
    assert set(runs) == {str(ok.pk), str(bad.pk)}
    good = runs[str(ok.pk)]
    assert good.kind == SpanKind.CONSUMER
    assert [link.context.span_id for link in good.links] == [sends[0].context.span_id]
    assert good.attributes["pgjobs.outcome"] == "completed"
    assert good.attributes["pgjobs.attempt"] == 1
    assert [event.name for event in good.events] == ["started"]
    failed = runs[str(bad.pk)]
    assert failed.attributes["pgjobs.outcome"] == "failed"
    assert failed.status.status_code.name == "ERROR"
    assert any(event.name == "exception" for event in failed.events)


@pytest.mark.django_db
@pytest.mark.parametrize("stored", ["garbage", {"traceparent": 5}, {"traceparent": "00-zz-yy-01"}])
def test_a_stored_context_of_any_shape_only_costs_the_link(traced, worker, stored):
    job = add.enqueue(1, 2)
    Job.objects.filter(pk=job.pk).update(meta={"otel": stored})
    worker.drain()
    job.refresh_from_db()
    assert job.state == S.COMPLETED
    (run,) = finished("process default")
    assert run.links == ()


@pytest.mark.slow
def test_the_link_crosses_into_a_real_worker_process(traced, worker_process, tmp_path):
    with tracer.start_as_current_span("POST /orders"):
        job = add.enqueue(20, 22)
    (send,) = finished("send default")
    spans_file = tmp_path / "spans.jsonl"
    process = worker_process(
        "--burst",
        env={
            "PGJOBS_MIDDLEWARE": f"tests.tracing_for_tests.ExportToFile,{TRACING}",
            "PGJOBS_TEST_SPANS": str(spans_file),
        },
    )
    assert process.wait(60) == 0, process.output()
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    (run,) = [span for span in spans if span["name"] == "process default"]
    assert run["kind"] == "SpanKind.CONSUMER"
    (link,) = run["links"]
    assert link["context"]["trace_id"] == f"0x{send.context.trace_id:032x}"
    assert link["context"]["span_id"] == f"0x{send.context.span_id:016x}"
    assert run["attributes"]["messaging.message.id"] == str(job.pk)
    assert run["attributes"]["messaging.system"] == "pgjobs"
    assert run["attributes"]["pgjobs.outcome"] == "completed"


@pytest.mark.django_db
def test_a_meta_that_is_no_dict_meets_enqueues_own_checks_as_without_tracing(settings):
    def refusal() -> str:
        with pytest.raises(Exception) as refused:
            Job.enqueue(add.name, args=[1, 2], meta=["not", "a", "dict"])
        return f"{type(refused.value).__name__}: {refused.value}"

    settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": []}
    without = refusal()
    settings.PGJOBS = {
        **settings.PGJOBS,
        "MIDDLEWARE": [TRACING, "tests.middleware_for_tests.tenants"],
    }
    assert refusal() == without
    assert not Job.objects.exists()
