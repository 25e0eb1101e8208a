"""What PGJOBS["MIDDLEWARE"] costs a job: time per call of a no-op task, in process.

    .venv/bin/python bench/middleware_cost.py [--jobs 200000] [--rounds 7]

Calls ``execution.call_task`` (what a worker thread calls for every job, hooks
included) on a no-op task, with no middleware, with one pass-through function, and
with the built-in metrics middleware, rounds interleaved; prints the median time per
job of each. No database: only the code around the task's call is timed. Run from an
older checkout (copy this file into its bench/) to compare with code without hooks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402

from django_pgjobs import execution  # noqa: E402
from django_pgjobs.context import JobContext  # noqa: E402
from django_pgjobs.models import Job  # noqa: E402
from django_pgjobs.tasks import Task  # noqa: E402


def noop() -> None:
    return None


def passing(context: object, call_next: object) -> object:
    return call_next()  # type: ignore[operator]


VARIANTS: dict[str, list[object]] = {
    "none": [],
    "one pass-through function": [passing],
    "PrometheusMiddleware": ["django_pgjobs.metrics.PrometheusMiddleware"],
}


def per_job_ns(jobs: int, entries: list[object]) -> float:
    task = Task(noop, "bench.noop")
    job = Job(id=1, task="bench.noop", queue="default", args=[], kwargs={}, meta={}, attempt=1)
    with override_settings(PGJOBS={**settings.PGJOBS, "MIDDLEWARE": entries}):
        execution.call_task(task, JobContext(job))  # the chain is built on first use
        started = time.perf_counter_ns()
        for _ in range(jobs):
            execution.call_task(task, JobContext(job))
        return (time.perf_counter_ns() - started) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    has_hooks = hasattr(execution, "middleware")
    variants = VARIANTS if has_hooks else {"none": []}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(options.rounds):
        for name, entries in variants.items():
            times[name].append(per_job_ns(options.jobs, entries))
    print(f"{ROOT} ({'with' if has_hooks else 'without'} middleware hooks), load "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    for name, values in times.items():
        print(f"  {name}: {statistics.median(values):,.0f} ns per job "
              f"(rounds: {', '.join(f'{v:,.0f}' for v in values)})")  # fmt: skip


if __name__ == "__main__":
    main()
