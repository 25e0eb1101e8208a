"""W4 for django-pgjobs alone: a producer offers a fixed rate while one worker drains.

    .venv/bin/python bench/sustained.py                      # bare `runworker`, 2,000/s, 10 s
    .venv/bin/python bench/sustained.py --rate 2000 --seconds 30 -- --prefetch 300

The producer enqueues no-op jobs in batches every 10 ms (``enqueue_many``), so that
the offered rate does not depend on how fast one client can commit one job per
transaction. Prints the backlog (available jobs) sampled every 100 ms, its maximum,
and the end-to-end latency (``finished_at - created_at``, both stamped on this
host) at p50/p95/p99/max. A scratch database named with this process's pid.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE / "runners"), str(HERE), str(ROOT)]

from common import drop_database, offer_at_rate, percentile, scratch_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="jobs per second offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the producer runs")
    parser.add_argument("worker_args", nargs="*", help="runworker options after --")
    options = parser.parse_args()

    url, env = scratch_django("sustained", "pgjobs_settings")
    from django.db import connection

    from django_pgjobs import Job

    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", "--queues=default",
         *options.worker_args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # the worker's start (imports, LISTEN) is not what is measured
        backlog: list[int] = []
        done = threading.Event()

        def sample() -> None:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                while not done.is_set():
                    row = conn.execute(
                        "SELECT count(*) FROM pgjobs_job WHERE state = 'available'"
                    ).fetchone()
                    backlog.append(row[0])
                    time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        offered = offer_at_rate(
            options.rate,
            options.seconds,
            lambda first, count: Job.enqueue_many([{"task": "pgjobs_tasks.noop"}] * count),
        )
        produced_in = time.monotonic() - start
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pgjobs_job WHERE state <> 'completed'")
                if cursor.fetchone()[0] == 0:
                    break
            time.sleep(0.05)
        drained_in = time.monotonic() - start
        done.set()
        sampler.join(2)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT extract(epoch FROM finished_at - created_at) FROM pgjobs_job"
                " WHERE state = 'completed'"
            )
            latencies = [row[0] * 1000 for row in cursor.fetchall()]
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(60)
        from django.db import connections

        connections.close_all()
        drop_database(url)
    load = os.getloadavg()[0]
    print(f"runworker {' '.join(options.worker_args) or '(defaults)'}: offered {offered} jobs "
          f"at {options.rate:.0f}/s for {produced_in:.1f} s; all done after {drained_in:.1f} s; "
          f"load {load:.2f}")  # fmt: skip
    print(f"backlog: max {max(backlog, default=0)}, last samples {backlog[-10:]}")
    p50, p95, p99 = (percentile(latencies, f) for f in (0.5, 0.95, 0.99))
    print(
        f"end-to-end latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}"
        f"  max {max(latencies):.1f}"
    )


if __name__ == "__main__":
    main()
