"""What debounced calls of one key cost, one by one in one transaction.

    .venv/bin/python bench/debounce_cost.py [--calls 1000 2000 4000] [--savepoint]

On a scratch database (migrated, dropped afterwards): for each count n, n calls of
``Job.enqueue(..., debounce_key="k", debounce=5)`` in one ``transaction.atomic()``,
as a bulk import that saves objects one by one and debounces a job for each does;
prints the time per call in each quarter of the n calls, then, still in that
transaction, EXPLAIN (ANALYZE, BUFFERS) of the lookup and of the update the next
call would make (each steps over the n versions of the row that the transaction
left), and the time of ``enqueue_many`` of the same n jobs. Each transaction is
rolled back. ``--savepoint`` wraps each call in a nested ``atomic()`` (a savepoint),
as ``Job.enqueue`` itself did before it wrote a debounced job without one. The load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH), str(BENCH.parent)]

from common import drop_database, scratch_django  # noqa: E402

TASK = "pgjobs_tasks.stamp"  # one argument: each call gives a new one
LOOKUP = Path(BENCH.parent, "django_pgjobs", "sql", "pending_debounced.sql").read_text()
UPDATE = (
    "UPDATE pgjobs_job SET args = '[0]', run_at = clock_timestamp() + interval '5 seconds'"
    " WHERE id = %s"
)


class RolledBack(Exception):
    pass


def explain(statement: str, params: object) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params)
        return [row[0] for row in cursor.fetchall()]


def summary(plan: list[str]) -> str:
    """A plan's execution time and its top node's buffers."""
    buffers = next(line.strip() for line in plan if "Buffers:" in line)
    return f"{plan[-1].strip()}, {buffers}"


def one_by_one(calls: int, savepoint: bool) -> None:
    from django.db import transaction

    from django_pgjobs import Job

    quarter = max(1, calls // 4)
    try:
        with transaction.atomic():
            marks = [time.perf_counter()]
            for n in range(calls):
                with transaction.atomic() if savepoint else contextlib.nullcontext():
                    job = Job.enqueue(TASK, args=[n], debounce_key="k", debounce=5)
                if (n + 1) % quarter == 0:
                    marks.append(time.perf_counter())
            per_call = [(b - a) / quarter * 1e3 for a, b in itertools.pairwise(marks)]
            total = marks[-1] - marks[0]
            print(
                f"{calls:,} calls: {total:.2f} s, {total / calls * 1e3:.2f} ms a call;"
                f" by quarter {' '.join(f'{ms:.2f}' for ms in per_call)} ms a call"
            )
            lookup = explain(LOOKUP, {"queue": "default", "key": "k"})
            print(f"  the next lookup: {summary(lookup)}")
            print(f"  the next update: {summary(explain(UPDATE, [job.pk]))}")
            raise RolledBack
    except RolledBack:
        pass


def in_one_batch(calls: int) -> None:
    from django.db import transaction

    from django_pgjobs import Job

    specs = [{"task": TASK, "args": [n], "debounce_key": "k", "debounce": 5} for n in range(calls)]
    try:
        with transaction.atomic():
            started = time.perf_counter()
            Job.enqueue_many(specs)
            print(f"  enqueue_many of the same {calls:,}: {time.perf_counter() - started:.2f} s")
            raise RolledBack
    except RolledBack:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--savepoint", action="store_true", help="A savepoint around each call.")
    options = parser.parse_args()
    url, _ = scratch_django("debounce", "pgjobs_settings")
    try:
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for calls in options.calls:
            one_by_one(calls, options.savepoint)
            in_one_batch(calls)
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(url)


if __name__ == "__main__":
    sys.exit(main())
