"""OpenTelemetry's SDK in a worker process under test: its spans go to a JSON-lines file."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor


class ExportToFile:
    """A middleware entry (put it first) that sets the SDK up when the worker loads
    its middleware: each finished span is one line of $PGJOBS_TEST_SPANS."""

    def __init__(self) -> None:
        provider = TracerProvider()
        out = open(os.environ["PGJOBS_TEST_SPANS"], "a")  # noqa: SIM115 (the process's life)
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

    def execute(self, context: Any, call_next: Any) -> Any:
        return call_next()
