"""What a worker's claim and outcome statements cost per job, server side and client side.

    .venv/bin/python bench/drain_cost.py [--jobs 20000] [--batch 100] [--rounds 3]

On a fresh database: ``jobs`` no-op jobs enqueued at once, then drained in a loop of
claim (sql/claim.sql, ``batch`` jobs) and finish (sql/finish.sql, all completed), each
in its own transaction as a worker's threads run them (the same server-binding
cursor), without running any task; ``--held N`` jobs stay executing throughout, as
other workers' jobs do in a busy drain. For each
statement it reads the CPU time of the PostgreSQL backend (/proc/<pid>/schedstat: the
server must run on this machine) and of this Python process: figures that still mean
something on a loaded box, where the wall time doesn't. The load average is printed
beside them. bench/README.md ("Where a drained job's microseconds go") reads it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH)]

from common import checkpoint, database_name, drop_database, recreate_database, with_database  # noqa: E402

DEFAULT_URL = "postgres://root@127.0.0.1:5432/pgjobs"


def job_updates(cursor: Any) -> tuple[int, int]:
    """Updates and HOT updates of the job table so far, this backend's own included
    (its pending statistics flushed first)."""
    cursor.execute("SELECT pg_stat_force_next_flush()")
    cursor.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'pgjobs_job'"
    )
    return cursor.fetchone()


def backend_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def drain(jobs: int, batch: int, held: int = 0) -> dict[str, float]:
    """Claim and complete ``jobs`` jobs ``batch`` at a time; CPU per job of each step.

    ``held`` more jobs are claimed first and never finished: the jobs other workers
    hold while they run them (a busy drain of three processes holds about 1,000).
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from django_pgjobs import Job, db, loaded, transitions

    db.prepare_on_this_thread()  # as a worker's claim loop and completer do
    Job.enqueue_many([{"task": "pgjobs_tasks.noop"}] * (held + jobs))
    if held:
        with transaction.atomic():
            params = {"queue": "default", "limit": held, "now": timezone.now()}
            params |= {"worker_id": None, "states": ["available", "scheduled", "retryable"]}
            params["most"] = 2_000_000  # loaded.limit() at the default MAX_PAYLOAD_BYTES
            params["inline"] = loaded.INLINE_BYTES
            assert len(db.fetch_jobs("claim", params)) == held
    checkpoint_url = os.environ["DATABASE_URL"]
    checkpoint(checkpoint_url)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        # The held jobs' claim counted too, not left pending in this backend's stats.
        upd0, hot0 = job_updates(cursor)
    spent = {"claim_server": 0, "claim_python": 0.0, "finish_server": 0, "finish_python": 0.0}
    done = 0
    load = os.getloadavg()[0]
    started = time.perf_counter()
    while True:
        server, python = backend_cpu_ns(pid), time.process_time()
        with transaction.atomic():
            params = {
                "queue": "default",
                "limit": batch,
                "now": timezone.now(),
                "worker_id": None,
                "states": ["available", "scheduled", "retryable"],
                "most": 2_000_000,
                "inline": loaded.INLINE_BYTES,
            }
            claimed = db.fetch_jobs("claim", params)
        spent["claim_server"] += backend_cpu_ns(pid) - server
        spent["claim_python"] += time.process_time() - python
        if not claimed:
            break
        server, python = backend_cpu_ns(pid), time.process_time()
        now = timezone.now()
        with transaction.atomic():
            transitions.finish([transitions.completed(job, None, now) for job in claimed], list)
        spent["finish_server"] += backend_cpu_ns(pid) - server
        spent["finish_python"] += time.process_time() - python
        done += len(claimed)
    wall = time.perf_counter() - started
    assert done == jobs, (done, jobs)
    time.sleep(0.6)  # pg_stat_user_tables: the counters are flushed at most once a second
    with connection.cursor() as cursor:
        upd, hot = job_updates(cursor)
    return {
        "claim_server_us": spent["claim_server"] / jobs / 1e3,
        "finish_server_us": spent["finish_server"] / jobs / 1e3,
        "claim_python_us": spent["claim_python"] / jobs * 1e6,
        "finish_python_us": spent["finish_python"] / jobs * 1e6,
        "wall_us": wall / jobs * 1e6,
        "updates": upd - upd0,
        "hot": hot - hot0,
        "load": (load + os.getloadavg()[0]) / 2,
    }


def scratch(statements: list[str]) -> None:
    """Run --scratch-sql statements on the scratch database before the drains: to
    learn what a trigger, index or constraint costs by taking it away (never how
    to run)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--held", type=int, default=0, help="jobs left executing throughout")
    # To learn what a trigger costs, in this scratch database only.
    parser.add_argument("--scratch-sql", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    url = with_database(args.url, f"{database_name(args.url)}_bench_drain_{os.getpid()}")
    from pgjobs_runner import PgJobs

    recreate_database(url)
    try:
        adapter = PgJobs(url, BENCH / ".work")
        adapter.install()
        scratch(args.scratch_sql)
        drain(500, args.batch)  # caches, plans: what a server pays once
        runs = []
        for round_ in range(args.rounds):
            adapter.reset()
            r = drain(args.jobs, args.batch, args.held)
            runs.append(r)
            print(
                f"round {round_ + 1} batch {args.batch} held {args.held}: server claim"
                f" {r['claim_server_us']:.1f}"
                f" finish {r['finish_server_us']:.1f} us/job; python claim"
                f" {r['claim_python_us']:.1f} finish {r['finish_python_us']:.1f} us/job;"
                f" wall {r['wall_us']:.0f} us/job; {r['updates']} updates, {r['hot']} HOT;"
                f" load {r['load']:.1f}",
                flush=True,
            )
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(
            f"median: server claim {median['claim_server_us']:.1f} finish"
            f" {median['finish_server_us']:.1f} us/job; python claim"
            f" {median['claim_python_us']:.1f} finish {median['finish_python_us']:.1f} us/job"
            f" (load {median['load']:.1f})"
        )
        adapter.close()
        from django.db import connection

        connection.close()
    finally:
        drop_database(url)


if __name__ == "__main__":
    main()
