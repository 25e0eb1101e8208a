"""What a W2 drain costs per job in CPU: the worker processes and their PostgreSQL backends.

    .venv/bin/python bench/w2_cost.py [--jobs 30000] [--rounds 3] [--only pgjobs,pgqueuer]

On a 2-core box a drain is bounded by the CPU each job takes, worker and server
together; that figure holds on a loaded box where the jobs per second don't. Each
system drains ``jobs`` no-op jobs with its ``best`` configuration (run.py's W2), on a
fresh database per run, the systems taking turns in each round. Read: the CPU time
of the worker processes and their children (/proc/<pid>/stat), of every backend of
the database (/proc/<pid>/schedstat: the server must run on this machine), and the
transactions committed (pg_stat_database), each per job, with the load average.

The same CPU is read again within run.py's steady window (from 10% of the jobs done
to 90%, each job done when its outcome's transaction ended, as run.py's W2 reads it;
the CPU is read from /proc every 10 ms, the nearest reading after each edge taken):
a system that does much of its work before its first jobs count as done (claims far
ahead, completions written late) spends less in the window than in the whole drain,
and its steady rate is higher by as much.

Two more figures of the whole drain, read where the machine allows: the WAL its
database wrote per job (``pg_waldump`` over the drain's WAL, records of other
databases left out; "n/a" where the server's WAL directory can't be read, as on a
remote server), and the CPU the rest of the box spent meanwhile, by process name
(PostgreSQL's WAL writer, the kernel's workers, the measuring itself, anything else
running), in cores: what a drain that leaves the box 0% idle shares it with.

``W2COST_LISTENING=1`` in the environment: a session listens for our job events
through each of our drains and reads them (as ``events.listen()`` or ``job.wait()``
would), so that our workers publish their claims and outcomes, which they skip while
nobody listens; its backend is not counted.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH)]

from common import (  # noqa: E402
    TransactionEnds,
    analyzed_with_backlog,
    checkpoint,
    cost_main,
    drop_database,
    now,
    process_tree,
    recreate_database,
    run_scratch_sql,
    running,
    wait_until,
)

TICK = os.sysconf("SC_CLK_TCK")
#: Seconds for idle backends to have flushed their counters to pg_stat_database
#: (at most once a second while busy; an idle one within the workers' poll).
STATS_FLUSHED = 3.0

LISTENING = os.environ.get("W2COST_LISTENING") == "1"


@contextlib.contextmanager
def listening() -> Iterator[list[int]]:
    """A session that listens for our job events and reads them, on a thread; yields
    a list holding how many it read."""
    import threading

    from django_pgjobs import events

    read, stop = [0], threading.Event()

    def drain(stream: events.EventStream) -> None:
        while not stop.is_set():
            read[0] += sum(1 for _ in stream.iter(timeout=0.1))

    with events.listen() as stream:
        thread = threading.Thread(target=drain, args=(stream,), daemon=True)
        thread.start()
        try:
            yield read
        finally:
            stop.set()
            thread.join()


def processes_cpu_s(pids: list[int]) -> float:
    """CPU seconds of ``pids`` (threads included) and of the children they reaped."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += sum(int(value) for value in fields[11:15])  # utime .. cstime
    return total / TICK


def box_ticks() -> tuple[int, int]:
    """(idle, total) CPU ticks of the whole box so far (/proc/stat): how busy the drain kept it."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def backend_pids(conn, others: set[int]) -> list[int]:
    """The database's backends but ``others``: the workers' (their connections persist)."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    ).fetchall()
    return [pid for (pid,) in rows if pid not in others]


def backends_cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total / 1e9


def commits(conn) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()[0]


def box_processes() -> dict[int, tuple[str, int]]:
    """Every process of the box: its name (a PostgreSQL process by its title's role,
    a kernel thread without its number) and its CPU ticks so far."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            stat = (entry / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if name in {"postgres", "postmaster"}:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                name = "postgres: " + title.split(": ", 2)[-1].split(" ")[0]
            fields = stat.rpartition(")")[2].split()
            found[int(entry.name)] = (
                re.sub(r"[/:]?\d+", "", name),
                int(fields[11]) + int(fields[12]),
            )
    return found


def elsewhere(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], ours: set[int]
) -> dict[str, float]:
    """CPU seconds of each process name between two ``box_processes`` but ``ours``."""
    spent: collections.Counter[str] = collections.Counter()
    for pid, (name, ticks) in after.items():
        if pid in ours:
            continue
        then = before.get(pid)
        spent[name] += ticks - (then[1] if then and then[0] == name else 0)
    return {name: ticks / TICK for name, ticks in spent.most_common() if ticks > 0}


#: Where the server's WAL lies, read off the server; pg_waldump of its version.
def wal_reader(conn) -> tuple[str, str] | None:
    """(pg_waldump, the WAL directory) if both are on this machine and readable."""
    try:
        directory = conn.execute("SHOW data_directory").fetchone()[0] + "/pg_wal"
        version = conn.execute("SHOW server_version_num").fetchone()[0][:-4]
    except Exception:  # not allowed to read it: no WAL figure
        return None
    waldump = shutil.which("pg_waldump") or f"/usr/lib/postgresql/{version}/bin/pg_waldump"
    if not (os.access(waldump, os.X_OK) and os.access(directory, os.R_OK)):
        return None
    return waldump, directory


_RECORD = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+),.*?desc: (\S+)")


def wal_written(reader: tuple[str, str], start: str, end: str, oid: int) -> dict[str, int]:
    """Bytes of WAL between LSNs ``start`` and ``end`` whose records touch database
    ``oid`` (commit records name none and are left out), by resource manager and
    record kind (\"Heap LOCK\"), and in all (\"total\")."""
    waldump, directory = reader
    dumped = subprocess.run(
        [waldump, "-p", directory, "-s", start, "-e", end], capture_output=True, text=True
    ).stdout
    written: collections.Counter[str] = collections.Counter()
    for line in dumped.splitlines():
        match = _RECORD.match(line)
        if match and f"/{oid}/" in line:
            written[f"{match[1]} {match[3]}"] += int(match[2])
            written["total"] += int(match[2])
    return dict(written)


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
        analyzed_with_backlog(adapter, jobs)  # as run.py's W2
        adapter.done()  # its connection open: not a worker's
        heard = listening() if LISTENING and system == "pgjobs" else contextlib.nullcontext([0])
        with heard as events_read, psycopg.connect(url, autocommit=True) as conn:
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
                # Read from here on at every 10 ms: only /proc, no query, no scan.
                tree = [pid for proc in workers.procs for pid in process_tree(proc.pid)]
                backends = backend_pids(conn, others | {conn.info.backend_pid})
                commits_before = commits(conn)
                reader = wal_reader(conn)
                oid, lsn_before = conn.execute(
                    "SELECT oid, pg_current_wal_lsn()::text FROM pg_database"
                    " WHERE datname = current_database()"
                ).fetchone()
                box_before = box_processes()
                readings = [read(tree, backends)]
                with TransactionEnds(url) as ends:
                    others.add(ends.backend_pid)
                    warm = set(adapter.outcome_xids())
                    readings.append(read(tree, backends))
                    adapter.enqueue_queued(jobs)
                    started = now()  # as run.py's W2: from the enqueue's commit

                    def finished() -> bool:
                        if len(readings) % 5 == 0:
                            # A worker connects some sessions at its first job (its
                            # outcome writer's, its publisher's): found here, where
                            # until 2026-12-07 they ran uncounted.
                            found = backend_pids(conn, others | {conn.info.backend_pid})
                            backends.extend(pid for pid in found if pid not in backends)
                        readings.append(read(tree, backends))
                        # The end polled every 50 ms, as run.py's W2 does.
                        return len(readings) % 5 == 0 and not adapter.busy()

                    wait_until(finished, 600, "the drain", 0.01)
                # TransactionEnds's last snapshot, taken as it closed, can be the first
                # to see the last job's transaction ended: a reading after it.
                readings.append(read(tree, backends))
                box_after = box_processes()
                (lsn_after,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                # Before the database is dropped: its DROP's checkpoint may recycle the WAL.
                wal = wal_written(reader, lsn_before, lsn_after, oid) if reader else {}
                ours = set(tree) | set(backends) | {conn.info.backend_pid}
                time.sleep(STATS_FLUSHED)
                commits_after = commits(conn)
                xids = [xid for xid in adapter.outcome_xids() if xid not in warm]
        adapter.close()
    finally:
        drop_database(url)
    assert len(xids) == jobs, f"{len(xids)} of {jobs} jobs succeeded"
    done_at = sorted(ends.ended_at(xids))
    start, end = readings[1], next(r for r in readings if r.at >= done_at[-1])
    first, last = (
        next(r for r in readings if r.at >= done_at[round(edge * jobs) - 1]) for edge in WINDOW
    )
    in_window = bisect.bisect_right(done_at, last.at) - bisect.bisect_right(done_at, first.at)
    if LISTENING and system == "pgjobs":  # each job's insert, claim and outcome
        assert events_read[0] >= 3 * jobs, f"{events_read[0]} events read of {jobs} jobs"
    return {
        "version": adapter.version,
        "per_s": jobs / (done_at[-1] - started),
        "worker_us": (end.workers - start.workers) / jobs * 1e6,
        "server_us": (end.server - start.server) / jobs * 1e6,
        "commits_per_100": (commits_after - commits_before) / jobs * 100,
        "idle_pct": 100 * (end.idle - start.idle) / max(end.total - start.total, 1),
        "window_per_s": in_window / (last.at - first.at),
        "window_worker_us": (last.workers - first.workers) / in_window * 1e6,
        "window_server_us": (last.server - first.server) / in_window * 1e6,
        "window_idle_pct": 100 * (last.idle - first.idle) / max(last.total - first.total, 1),
        "wal_bytes": wal["total"] / jobs if wal else None,
        "wal_lock_bytes": wal.get("Heap LOCK", 0) / jobs if wal else None,
        # The rest of the box, in cores over the drain; this measuring process included.
        "elsewhere_cores": {
            name: round(seconds / (end.at - start.at), 2)
            for name, seconds in list(elsewhere(box_before, box_after, ours).items())[:4]
        },
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


def read(tree: list[int], backends: list[int]) -> Reading:
    at = now()
    idle, total = box_ticks()
    return Reading(at, processes_cpu_s(tree), backends_cpu_s(backends), idle, total)


def _wal(run: dict) -> str:
    if run["wal_bytes"] is None:
        return "WAL n/a (the server's WAL directory can't be read here)"
    return f"WAL {run['wal_bytes']:,.0f} bytes/job (row locks {run['wal_lock_bytes']:,.0f})"


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
            f" box {run['window_idle_pct']:.0f}% idle\n"
            f"  {_wal(run)}; elsewhere on the box (cores): "
            + ", ".join(f"{name} {cores:.2f}" for name, cores in run["elsewhere_cores"].items())
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
