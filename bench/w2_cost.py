"""What a W2 drain costs per job in CPU: the worker processes and their PostgreSQL backends.

    .venv/bin/python bench/w2_cost.py [--jobs 30000] [--rounds 3] [--only pgjobs,pgqueuer]

On a 2-core box a drain is bounded by the CPU each job takes, worker and server
together; that figure holds on a loaded box where the jobs per second don't. Each
system drains ``jobs`` no-op jobs with its ``best`` configuration (run.py's W2), on a
fresh database per run, the systems taking turns in each round. Read: the CPU time
of the worker processes and their children (/proc/<pid>/stat), of every backend of
the database (/proc/<pid>/schedstat: the server must run on this machine), and the
transactions committed (pg_stat_database), each per job, with the load average.

The same CPU is read again within run.py's steady window (from the first sample with
10% of the jobs done to the first with 90%; the remaining count sampled every 10 ms,
as run.py's W2 does): a system that does much of its work before its first jobs
count as done (claims far ahead, completions written late) spends less in the
window than in the whole drain, and its steady rate is higher by as much.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH)]

from common import (  # noqa: E402
    checkpoint,
    cost_main,
    drop_database,
    now,
    recreate_database,
    run_scratch_sql,
    running,
    wait_until,
)

TICK = os.sysconf("SC_CLK_TCK")
#: Seconds for idle backends to have flushed their counters to pg_stat_database
#: (at most once a second while busy; an idle one within the workers' poll).
STATS_FLUSHED = 3.0


def tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants (threads included)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            # utime, stime, and those of reaped children (fields 14-17 of stat).
            total += sum(int(value) for value in stats[pid][11:15]) / TICK
        todo += children.get(pid, [])
    return total


def box_ticks() -> tuple[int, int]:
    """(idle, total) CPU ticks of the whole box so far (/proc/stat): how busy the drain kept it."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def backends_cpu_s(conn, others: set[int]) -> tuple[float, int]:
    """CPU seconds of the database's backends but ``others``, and the transactions committed."""
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    ).fetchall()
    total = 0
    for (pid,) in pids:
        if pid not in others:
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    conn.execute("SELECT pg_stat_clear_snapshot()")
    commits = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()[0]
    return total / 1e9, commits


def measure(system: str, url: str, jobs: int, scratch_sql: list[str]) -> dict[str, float]:
    """In the system's own interpreter: per-job CPU of one drain of ``jobs`` jobs."""
    import psycopg

    if system == "pgjobs":
        from pgjobs_runner import PgJobs as Runner
    else:
        from pgqueuer_runner import PgQueuer as Runner
    recreate_database(url)
    try:
        adapter = Runner(url, BENCH / ".work")
        adapter.install()
        run_scratch_sql(url, scratch_sql)
        adapter.done()  # its connection open: not a worker's
        with psycopg.connect(url, autocommit=True) as conn:
            # The backends that are not the workers': this one's, the adapter's.
            others = {
                pid
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchall()
            }
            with running(adapter, adapter.best) as workers:
                checkpoint(url)
                time.sleep(STATS_FLUSHED)
                before_done = adapter.done()
                workers_cpu = sum(tree_cpu_s(proc.pid) for proc in workers.procs)
                server_cpu, commits = backends_cpu_s(conn, others)
                adapter.enqueue_queued(jobs)
                started = now()  # as run.py's W2: from the enqueue's commit
                box = box_ticks()
                marks: dict[float, tuple[int, Reading]] = {}

                def finished() -> bool:
                    left = adapter.remaining()
                    for done in WINDOW:
                        if done not in marks and left <= (1 - done) * jobs:
                            marks[done] = (left, read(workers, conn, others))
                    return left == 0

                wait_until(finished, 600, "the drain", 0.01)
                wall = now() - started
                idle, total = (
                    after - before for after, before in zip(box_ticks(), box, strict=True)
                )
                assert adapter.done() == before_done + jobs
                workers_cpu = sum(tree_cpu_s(proc.pid) for proc in workers.procs) - workers_cpu
                server_after, _ = backends_cpu_s(conn, others)
                time.sleep(STATS_FLUSHED)
                _, commits_after = backends_cpu_s(conn, others)
        adapter.close()
    finally:
        drop_database(url)
    (left_from, first), (left_to, last) = marks[WINDOW[0]], marks[WINDOW[1]]
    in_window = left_from - left_to
    return {
        "version": adapter.version,
        "per_s": jobs / wall,
        "worker_us": workers_cpu / jobs * 1e6,
        "server_us": (server_after - server_cpu) / jobs * 1e6,
        "commits_per_100": (commits_after - commits) / jobs * 100,
        "idle_pct": 100 * idle / max(total, 1),
        "window_per_s": in_window / (last.at - first.at),
        "window_worker_us": (last.workers - first.workers) / in_window * 1e6,
        "window_server_us": (last.server - first.server) / in_window * 1e6,
        "window_idle_pct": 100 * (last.idle - first.idle) / max(last.total - first.total, 1),
    }


#: run.py's steady window: from 10% of the jobs done to 90%.
WINDOW = (0.1, 0.9)


@dataclass
class Reading:
    """CPU seconds so far of the workers and of their backends, and the box's ticks."""

    at: float
    workers: float
    server: float
    idle: int
    total: int


def read(workers, conn, others: set[int]) -> Reading:
    at = now()
    idle, total = box_ticks()
    server, _ = backends_cpu_s(conn, others)
    return Reading(at, sum(tree_cpu_s(proc.pid) for proc in workers.procs), server, idle, total)


def main() -> None:
    cost_main(
        __file__,
        __doc__,
        measure,
        jobs=30000,
        tag="w2cost",
        per_run=lambda run: (
            f"{run['per_s']:7,.0f}/s  worker {run['worker_us']:4.1f}"
            f" us  server {run['server_us']:4.1f} us  total"
            f" {run['worker_us'] + run['server_us']:4.1f} us/job;"
            f" {run['commits_per_100']:.1f} commits/100 jobs; box {run['idle_pct']:.0f}% idle;"
            f" load {run['load']:.1f}\n"
            f"  steady window {run['window_per_s']:7,.0f}/s  worker {run['window_worker_us']:4.1f}"
            f" us  server {run['window_server_us']:4.1f} us  total"
            f" {run['window_worker_us'] + run['window_server_us']:4.1f} us/job;"
            f" box {run['window_idle_pct']:.0f}% idle"
        ),
        per_median=lambda medians: (
            f"worker {medians['worker_us']:.1f} us,"
            f" server {medians['server_us']:.1f} us per job; {medians['per_s']:,.0f}/s"
            f" (load {medians['load']:.1f}); steady window: worker"
            f" {medians['window_worker_us']:.1f} us, server {medians['window_server_us']:.1f} us"
            f" per job; {medians['window_per_s']:,.0f}/s"
        ),
    )


if __name__ == "__main__":
    main()
