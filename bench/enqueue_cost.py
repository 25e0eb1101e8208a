"""What one enqueue per transaction costs per job: wall time, Python CPU, server CPU.

    .venv/bin/python bench/enqueue_cost.py [--jobs 3000] [--rounds 3] [--only pgjobs]

One client enqueues no-op jobs one by one, each in a transaction of its own (run.py's
W1a), on a fresh database per run. Beside the wall time it reads the CPU time of the
Python process (getrusage) and of its PostgreSQL backend (/proc/<pid>/schedstat: the
server must run on this machine), which still mean something on a loaded box where
the wall time doesn't. django-pgjobs and pgqueuer (in its virtualenv, installed by
run.py on first use) take turns in each round; the load average is printed beside
each run. docs/how-it-works.md ("Where one enqueue's microseconds go") reads it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH)]

from common import (  # noqa: E402
    checkpoint,
    cost_main,
    drop_database,
    recreate_database,
    run_scratch_sql,
)


def backend_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def measure(system: str, url: str, jobs: int, scratch_sql: list[str]) -> dict[str, float]:
    """In the system's own interpreter: per-job figures of ``jobs`` enqueues."""
    if system == "pgjobs":
        from pgjobs_runner import PgJobs

        adapter = PgJobs(url, BENCH / ".work")
        from django.db import connection

        def backend_pid() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                return cursor.fetchone()[0]
    else:
        from pgqueuer_runner import PgQueuer

        adapter = PgQueuer(url, BENCH / ".work")

        def backend_pid() -> int:
            return adapter._run(adapter.conn.fetchval("SELECT pg_backend_pid()"))

    recreate_database(url)
    try:
        adapter.install()
        run_scratch_sql(url, scratch_sql)
        adapter.enqueue_each(200)  # caches, plans, connection: what a server pays once
        adapter.reset()
        checkpoint(url)
        pid = backend_pid()
        server, python = backend_cpu_ns(pid), time.process_time()
        started = time.perf_counter()
        adapter.enqueue_each(jobs)
        wall = time.perf_counter() - started
        python, server = time.process_time() - python, backend_cpu_ns(pid) - server
        version = adapter.version
        adapter.close()
    finally:
        drop_database(url)
    return {
        "version": version,
        "per_s": jobs / wall,
        "wall_us": wall / jobs * 1e6,
        "python_us": python / jobs * 1e6,
        "server_us": server / jobs / 1e3,
    }


def main() -> None:
    cost_main(
        __file__,
        __doc__,
        measure,
        jobs=3000,
        tag="cost",
        per_run=lambda run: (
            f"{run['per_s']:7,.0f}/s  wall {run['wall_us']:4.0f} us"
            f"  python {run['python_us']:4.0f} us  server {run['server_us']:4.0f} us"
            f"  load {run['load']:.1f}"
        ),
        per_median=lambda medians: (
            f"{medians['per_s']:,.0f}/s, wall "
            f"{medians['wall_us']:.0f} us, python {medians['python_us']:.0f} us, server "
            f"{medians['server_us']:.0f} us per job (load {medians['load']:.1f})"
        ),
    )


if __name__ == "__main__":
    main()
