"""A soak: mixed load for --minutes, the job table's health sampled every 30 s.

    .venv/bin/python bench/soak.py                          # 30 min at half the measured drain rate
    .venv/bin/python bench/soak.py --minutes 10 --rate 3000 --pin-xmin-after 5
    PYTHONPATH=/tmp/mpl .venv/bin/python bench/soak.py --plot bench/results/soak.csv

The load: one ``runworker`` (options after ``--``, default ``--processes 2
--concurrency 50``) drains ``soak_tasks.maybe_fail`` jobs that fail 5% of the time
(three attempts, 1 s apart); a producer process enqueues them at ``--rate`` jobs/s
(default: half the drain rate measured first on the same worker); ``runscheduler``
fires a cron tick every minute and prunes jobs finished more than 120 s ago every
30 s (bench/runners/soak_settings.py). A probe claims one job of its own queue
every 0.2 s with the worker's claim statement and times it (claim + commit).

Every 30 s a row goes to the CSV: the table's heap/total/index sizes, live and dead
tuples and autovacuum runs (pg_stat_user_tables), jobs finished per second, the
backlog, claim p50/p99, end-to-end p99 and the load average. ``--pin-xmin-after M``
opens a REPEATABLE READ transaction after M minutes and keeps it open to the end
(what a forgotten ``BEGIN`` in a shell or a long report does to vacuum).

The plot needs matplotlib, which is not a dependency of the package: ``pip install
django-pgjobs[bench]``, or ``pip install --target /tmp/mpl matplotlib`` and
``PYTHONPATH=/tmp/mpl``. Without it the CSV is still written. A scratch database
named with this process's pid, dropped at the end.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE / "runners"), str(HERE), str(ROOT)]

from common import (  # noqa: E402
    drop_database,
    offer_at_rate,
    percentile,
    scratch_django,
    setup_django,
)

from django_pgjobs.db import statement  # noqa: E402
from django_pgjobs.loaded import INLINE_BYTES  # noqa: E402

SETTINGS = "soak_settings"  # bench/runners/soak_settings.py
SAMPLE_EVERY = 30.0
FAIL_RATE = 0.05
CLAIM_SQL = statement("claim")  # its included fragments too
PROBE_INSERT = """
INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt, max_attempts,
                        run_at, created_at, errors, meta, pending_dependencies)
VALUES ('soak_tasks.tick', 'probe', '[]', '{}', 'available', 0, 0, 1, now(), now(),
        '[]', '{}', 0)
"""
HEALTH = """
SELECT pg_relation_size('pgjobs_job'), pg_total_relation_size('pgjobs_job'),
       pg_indexes_size('pgjobs_job'), pg_relation_size('pgjobs_job_claim'),
       n_live_tup, n_dead_tup, autovacuum_count
FROM pg_stat_user_tables WHERE relname = 'pgjobs_job'
"""
WINDOW = """
SELECT count(*),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY finished_at - created_at)
FROM pgjobs_job
WHERE state IN ('completed', 'discarded', 'cancelled')
  AND finished_at > now() - make_interval(secs => %s) AND queue = 'default'
"""
BACKLOG = "SELECT count(*) FROM pgjobs_job WHERE queue = 'default' AND state = 'available'"
COLUMNS = [
    "t_min", "load1", "heap_mb", "total_mb", "indexes_mb", "claim_index_mb", "live_tuples",
    "dead_tuples", "autovacuums", "finished_per_s", "offered_per_s", "backlog",
    "claim_p50_ms", "claim_p99_ms", "e2e_p99_ms", "xmin_pinned",
]  # fmt: skip


def main() -> None:
    # SIGTERM ends it as Ctrl-C does: the finally clauses stop workers, drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, help="jobs/s offered (default: half the drain)")
    parser.add_argument("--pin-xmin-after", type=float, metavar="MINUTES")
    parser.add_argument("--out", default=str(HERE / "results" / "soak"), help="CSV/PNG stem")
    parser.add_argument("--plot", metavar="CSV", help="only render the PNG of a CSV")
    parser.add_argument("--produce", type=float, help=argparse.SUPPRESS)
    parser.add_argument("worker_args", nargs="*", help="runworker options after --")
    options = parser.parse_args()
    if options.plot:
        plot(Path(options.plot), Path(options.plot).with_suffix(".png"))
        return
    if options.produce:
        produce(options.produce, options.minutes * 60, Path(options.out))
        return
    soak(options)


def produce(rate: float, seconds: float, counter: Path) -> None:
    """Enqueue maybe_fail jobs at ``rate`` per second in 10 ms batches; write the count."""
    setup_django(os.environ["DATABASE_URL"], SETTINGS)
    from django_pgjobs import Job

    job = {"task": "soak_tasks.maybe_fail", "kwargs": {"fail_rate": FAIL_RATE}}

    def count(ticks: int, offered: int) -> None:
        if ticks % 100 == 0:  # about once a second
            counter.write_text(str(offered))

    offered = offer_at_rate(rate, seconds, lambda first, due: Job.enqueue_many([job] * due), count)
    counter.write_text(str(offered))


def soak(options: argparse.Namespace) -> None:
    url, env = scratch_django("soak_scale", SETTINGS)
    worker_args = options.worker_args or ["--processes", "2", "--concurrency", "50"]
    manage = [sys.executable, str(ROOT / "manage.py")]
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen([*manage, "runworker", "--queues=default", *worker_args],
                         start_new_session=True, **quiet),
        subprocess.Popen([*manage, "runscheduler"], start_new_session=True, **quiet),
    ]  # fmt: skip
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counter = out.with_suffix(".offered")
    try:
        import psycopg

        time.sleep(3)  # the worker's start is not what is measured
        rate = options.rate or drain_rate(url) / 2
        print(f"offering {rate:.0f} jobs/s for {options.minutes} min; load {load()}", flush=True)
        counter.write_text("0")
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--produce", str(rate), "--minutes",
                 str(options.minutes), "--out", str(counter)],
                start_new_session=True, **quiet,
            )
        )  # fmt: skip
        probe = Probe(url)
        probe.start()
        pinned = Pin(url)
        rows = []
        start = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn, open(out.with_suffix(".csv"), "w") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            last_offered = 0
            while True:
                elapsed = time.monotonic() - start
                if elapsed - elapsed % SAMPLE_EVERY + SAMPLE_EVERY > options.minutes * 60 + 1:
                    break
                time.sleep(SAMPLE_EVERY - (elapsed % SAMPLE_EVERY))
                elapsed = time.monotonic() - start
                pin_at = options.pin_xmin_after
                if pin_at is not None and elapsed >= pin_at * 60 and not pinned.held:
                    pinned.hold()
                offered = int(counter.read_text() or 0)
                row = sample(conn, elapsed, probe.take(), offered - last_offered, pinned.held)
                last_offered = offered
                writer.writerow(row)
                f.flush()
                rows.append(row)
                print(dict(zip(COLUMNS, row, strict=True)), flush=True)
        probe.stop()
        pinned.release()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            proc.wait(60)
        from django.db import connections

        connections.close_all()
        drop_database(url)
        counter.unlink(missing_ok=True)
    try:
        plot(out.with_suffix(".csv"), out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no plot (see --plot)")


def drain_rate(url: str, jobs: int = 20000) -> float:
    """Jobs/s the running worker drains (jobs that never fail), measured once."""
    import psycopg

    from django_pgjobs import Job

    Job.enqueue_many([{"task": "soak_tasks.maybe_fail", "kwargs": {"fail_rate": 0}}] * jobs)
    start = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        unfinished = BACKLOG.replace("state = 'available'", "state <> 'completed'")
        while conn.execute(unfinished).fetchone()[0]:
            time.sleep(0.05)
        took = time.monotonic() - start
        conn.execute("DELETE FROM pgjobs_job")
        conn.execute("VACUUM ANALYZE pgjobs_job")
    print(f"drain: {jobs} jobs in {took:.1f} s = {jobs / took:.0f} jobs/s; load {load()}")
    return jobs / took


def sample(conn, elapsed: float, claims: list[float], offered: int, pinned: bool) -> list:
    heap, total, indexes, claim_index, live, dead, vacuums = conn.execute(HEALTH).fetchone()
    finished, e2e = conn.execute(WINDOW, (SAMPLE_EVERY,)).fetchone()
    backlog = conn.execute(BACKLOG).fetchone()[0]
    mb = 1024 * 1024
    return [
        round(elapsed / 60, 2), os.getloadavg()[0], round(heap / mb, 1), round(total / mb, 1),
        round(indexes / mb, 1), round(claim_index / mb, 2), live, dead, vacuums,
        round(finished / SAMPLE_EVERY), round(offered / SAMPLE_EVERY), backlog,
        round(percentile(claims, 0.5), 2) if claims else "",
        round(percentile(claims, 0.99), 2) if claims else "",
        round(e2e.total_seconds() * 1000, 1) if e2e else "", int(pinned),
    ]  # fmt: skip


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


class Probe(threading.Thread):
    """Claims one job of queue 'probe' every 0.2 s with claim.sql; times claim + commit."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.times, self.done = url, [], threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                conn.execute(PROBE_INSERT)
                params = {"queue": "probe", "now": datetime.now(UTC), "limit": 1,
                          "states": ["available"], "worker_id": None,
                          "most": 2_000_000, "inline": INLINE_BYTES}  # fmt: skip
                begin = time.perf_counter()
                with conn.transaction():
                    claimed = conn.execute(CLAIM_SQL, params).fetchall()
                took = (time.perf_counter() - begin) * 1000
                with self.lock:
                    self.times.append(took)
                if claimed:
                    conn.execute(
                        "UPDATE pgjobs_job SET state = 'completed', finished_at = now()"
                        " WHERE id = %s",
                        (claimed[0][0],),
                    )
                self.done.wait(0.2)

    def take(self) -> list[float]:
        with self.lock:
            times, self.times = self.times, []
        return times

    def stop(self) -> None:
        self.done.set()
        self.join(10)


class Pin:
    """A session holding a snapshot open: the oldest xmin vacuum must respect."""

    def __init__(self, url: str) -> None:
        self.url, self.conn = url, None

    @property
    def held(self) -> bool:
        return self.conn is not None

    def hold(self) -> None:
        import psycopg

        self.conn = psycopg.connect(self.url)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT 1")
        print(f"xmin pinned; load {load()}", flush=True)

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def plot(csv_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))

    def series(name: str) -> list[float]:
        return [float(r[name]) if r[name] != "" else float("nan") for r in rows]

    t = series("t_min")
    pins = [t[i] for i, r in enumerate(rows) if r["xmin_pinned"] == "1"]
    panels = [
        ("job table (MB)", ["heap_mb", "indexes_mb", "total_mb"]),
        ("tuples (pg_stat_user_tables)", ["live_tuples", "dead_tuples"]),
        ("claim index (MB)", ["claim_index_mb"]),
        ("probe claim + commit (ms)", ["claim_p50_ms", "claim_p99_ms"]),
        ("jobs/s", ["offered_per_s", "finished_per_s"]),
        ("backlog (available jobs)", ["backlog"]),
        ("end-to-end p99 (ms)", ["e2e_p99_ms"]),
        ("load average (1 min), autovacuum runs", ["load1", "autovacuums"]),
    ]
    fig, axes = plt.subplots(4, 2, figsize=(12, 13), sharex=True)
    for ax, (title, names) in zip(axes.flat, panels, strict=True):
        for name in names:
            ax.plot(t, series(name), label=name, marker=".")
        if pins:
            ax.axvline(pins[0], color="red", linestyle="--", label="xmin pinned")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle(f"django-pgjobs soak: {csv_path.name}")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
