"""What enqueueing costs, plain and with typed arguments. Prints figures; not a test.

    .venv/bin/python bench/typed_args.py [--bulk 10000] [--each 2000] [--rounds 5]

Times, in rounds interleaved on one database: ``Job.enqueue_many`` of ``--bulk`` jobs
in one call, and a loop of ``--each`` one-job ``task.enqueue`` calls, each its own
transaction (autocommit), for a plain task (``noop(n: int)``, JSON arguments) and,
where the code has typed arguments (``@task(typed=True)``), for a task taking a date,
a Decimal, a UUID and a dataclass (``--plain``: not, and no typed task registered at
all: what a project without typed tasks runs). Prints the median of each with every round's figure
and the load average. Run it from an older checkout (copy this file into its bench/)
to compare the plain figures with code before typed arguments.

Uses its own database (``$BENCH_DATABASE_URL``, default ``pgjobs_typed_bench_<pid>`` on
the local server), dropped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNERS = HERE / "runners"
sys.path[:0] = [str(RUNNERS), str(HERE), str(ROOT)]

from common import drop_database  # noqa: E402

DEFAULT_URL = f"postgres://root@127.0.0.1:5432/pgjobs_typed_bench_{os.getpid()}"


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int


def workloads(args: argparse.Namespace) -> dict[str, object]:
    """name -> a function that runs it once and returns its seconds."""
    from django.db import connection

    from django_pgjobs import Job, task

    @task(name="bench.plain")
    def plain(n: int) -> None: ...

    found: dict[str, object] = {}

    def truncate() -> None:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE pgjobs_job, pgjobs_jobdependency")

    def bulk(name: str, make_args: object) -> None:
        def run() -> float:
            specs = [{"task": name, "args": make_args(n)} for n in range(args.bulk)]  # type: ignore[operator]
            started = time.perf_counter()
            Job.enqueue_many(specs)
            return time.perf_counter() - started

        found[f"enqueue_many of {args.bulk:,}, {name}"] = run

    def each(registered: object, make_args: object) -> None:
        def run() -> float:
            started = time.perf_counter()
            for n in range(args.each):
                registered.enqueue(*make_args(n))  # type: ignore[attr-defined,operator]
            return time.perf_counter() - started

        found[f"{args.each:,} x enqueue, {registered.name}"] = run  # type: ignore[attr-defined]

    bulk("bench.plain", lambda n: [n])
    each(plain, lambda n: [n])
    if args.plain:
        return found | {"_truncate": truncate}
    try:

        @task(name="bench.typed", typed=True)
        def typed(when: date, amount: Decimal, ref: uuid.UUID, line: Line) -> None: ...

    except TypeError:  # code before typed arguments
        pass
    else:
        ref = uuid.uuid4()

        def typed_args(n: int) -> list[object]:
            return [date(2026, 1, 1), Decimal("12.50"), ref, Line("A-1", n)]

        bulk("bench.typed", typed_args)
        each(typed, typed_args)

    found["_truncate"] = truncate
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk", type=int, default=10_000)
    parser.add_argument("--each", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plain", action="store_true", help="the plain task only")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    os.environ.update({"DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "pgjobs_settings"})
    drop_database(url, create=True)
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        runs = workloads(args)
        truncate = runs.pop("_truncate")
        for run in runs.values():  # warm up: imports, caches, the first statements
            run()  # type: ignore[operator]
            truncate()  # type: ignore[operator]
        times: dict[str, list[float]] = {name: [] for name in runs}
        loads = []
        for _ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for name, run in runs.items():
                times[name].append(run())  # type: ignore[operator]
                truncate()  # type: ignore[operator]
        print(f"{ROOT}; load average (1 min) at each round: {', '.join(f'{x:.2f}' for x in loads)}")
        for name, values in times.items():
            jobs = args.bulk if name.startswith("enqueue_many") else args.each
            print(
                f"  {name}: median {statistics.median(values) * 1000:,.1f} ms, "
                f"{jobs / statistics.median(values):,.0f} jobs/s "
                f"(rounds: {', '.join(f'{v * 1000:,.1f}' for v in values)} ms)"
            )
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
