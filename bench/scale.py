"""Ten million jobs: what a full job table costs enqueue, claim, drain, admin and API.

    .venv/bin/python bench/scale.py                     # empty, then 10,000,000 rows
    .venv/bin/python bench/scale.py --rows 1000000 --keep
    .venv/bin/python bench/scale.py --reuse pgjobs_bench_scale_p123 --only admin --rounds 3

Measures everything once on the empty table, fills it with ``--rows`` jobs the
way production looks before pruning (97% finished over ten days: completed,
discarded with a traceback, cancelled; a few thousand available, scheduled,
retryable and executing), VACUUM ANALYZEs it as autovacuum would have, and
measures again; then prunes the oldest day's finished jobs (the library's
``maintenance.prune_finished``, what ``manage.py pgjobs prune`` calls) while a
probe claims (its jobs deleted after), and prints a table: empty vs full, the
ratio, ``!!`` past 2x.

- enqueue: ``Job.enqueue`` one job per transaction, p50/p99 of 300;
- claim: claim.sql for one job of a queue of its own, claim + commit, p50/p99 of 300;
- W2 drain: 10,000 no-op jobs on ``runworker --processes 2 --concurrency 50
  --prefetch 300`` (as bench/run.py), jobs/s;
- admin: every page through Django's test client as a superuser, the median of 9
  (and the CPU per page of this process and its PostgreSQL backend, which the load
  changes less):
  the job list unfiltered, with each state, queue and task filter, a search, a
  date drill-down, the dashboard and its data, a job's page;
- API: ``GET /jobs/<id>`` and ``POST /jobs`` with a token, median of 20.

A database of its own (``pgjobs_bench_scale_p<pid>``), dropped at the end unless
``--keep``. The load average is printed with every phase.

To iterate on one part: ``--keep`` a filled database once, then ``--reuse NAME``
measures it against a new empty database (dropped at the end; the kept one is
not) without filling, ``--only`` some phases (``admin``, ``api``, ...), in
``--rounds`` alternating empty and full (A B A B: the load changes less between
the two than over minutes); each figure is the median of the rounds.
``--baseline-rows N`` gives the new database N jobs of the same mix instead of
none (pages full of jobs on both sides). Before each measure of the kept database,
its newest two hours of jobs are moved to end now (``retime``): its last hour then
holds a full hour's traffic (~41,000 finished jobs at ten million), as when filled.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE / "runners"), str(HERE), str(ROOT)]

from common import (  # noqa: E402
    FILLED_JOB_COLUMNS,
    admin_client,
    database_name,
    drop_database,
    percentile,
    scratch_django,
    with_database,
)

from django_pgjobs.db import statement  # noqa: E402
from django_pgjobs.loaded import INLINE_BYTES  # noqa: E402

CLAIM_SQL = statement("claim")  # its included fragments too
INSERT_AVAILABLE = """
INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt, max_attempts,
                        run_at, created_at, errors, meta, pending_dependencies)
SELECT 'pgjobs_tasks.noop', %(queue)s, '[]', '{}', 'available', 0, 0, 1, now(), now(),
       '[]', '{}', 0
FROM generate_series(1, %(count)s)
"""
# Set-based: generate_series writes a million rows in seconds where the ORM would take
# minutes. Rows n in [lo, hi) of a table of %(rows)s, created evenly over ten days.
FILL = (
    """
INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt, max_attempts,
                        run_at, created_at, attempted_at, finished_at, errors, result,
                        meta, pending_dependencies, lease, worker_id)
SELECT (ARRAY['pgjobs_tasks.noop', 'pgjobs_tasks.sleep_ms', 'soak_tasks.maybe_fail',
              'soak_tasks.tick'])[1 + n %% 4],
       (ARRAY['default', 'mail', 'reports'])[1 + (n / 7) %% 3],
       jsonb_build_array(n, 'user-' || (n %% 5000), 'order-' || md5(n::text)),
       jsonb_build_object('locale', 'en', 'notify', n %% 2 = 0),
       state,
       0,"""
    + FILLED_JOB_COLUMNS
    + """,
       CASE WHEN state = 'completed' THEN jsonb_build_object('sent', n, 'id', md5(n::text)) END,
       CASE WHEN n %% 10 = 0 THEN jsonb_build_object('pipeline', md5(n::text)) ELSE '{}' END,
       0,
       CASE WHEN state = 'executing' THEN gen_random_uuid() END,
       CASE WHEN state = 'executing' THEN 1 END
FROM (
    SELECT n,
           now() - interval '10 days' + (interval '10 days' * n / %(rows)s) AS created,
           CASE WHEN n > %(rows)s - %(active)s THEN
                    (ARRAY['available', 'scheduled', 'retryable', 'executing'])[1 + n %% 4]
                WHEN n %% 100 < 95 THEN 'completed'
                WHEN n %% 100 < 98 THEN 'discarded'
                ELSE 'cancelled' END AS state
    FROM generate_series(%(lo)s, %(hi)s - 1) AS n
) AS g
"""
)


def main() -> None:
    # SIGTERM ends it as Ctrl-C does: the finally clauses stop workers, drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--active", type=int, default=4000, help="unfinished jobs among them")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--no-drain", action="store_true", help="skip W2")
    parser.add_argument("--reuse", metavar="NAME", help="a database kept filled by --keep")
    parser.add_argument("--only", help=f"comma-separated phases of {','.join(PHASES)}")
    parser.add_argument("--rounds", type=int, default=1, help="alternations, with --reuse")
    parser.add_argument(
        "--baseline-rows", type=int, default=0,
        help="with --reuse: the small database gets this many jobs of the same mix, not none",
    )  # fmt: skip
    options = parser.parse_args()
    phases = options.only.split(",") if options.only else list(PHASES)
    if options.no_drain and "drain" in phases:
        phases.remove("drain")
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    url, env = scratch_django("scale", "scale_settings")
    from django.test.utils import setup_test_environment

    setup_test_environment()
    try:
        bench = Bench(url, env, phases)
        if options.reuse:
            if options.baseline_rows:
                fill(url, options.baseline_rows, max(4, options.baseline_rows // 12))
            alternate(bench, with_database(url, options.reuse), options.rounds,
                      options.baseline_rows)  # fmt: skip
            return
        empty = bench.measure("empty")
        fill(url, options.rows, options.active)
        full = bench.measure(f"{options.rows:,} rows")
        pruned = bench.prune()
        report(empty, full, options.rows)
        print(pruned)
    finally:
        from django.db import connections

        connections.close_all()
        if options.keep:
            print(f"kept: {url}")
        else:
            drop_database(url)


PHASES = ("enqueue", "claim", "drain", "admin", "api")


def alternate(bench: Bench, full_url: str, rounds: int, baseline: int = 0) -> None:
    """Measure the new database and the kept full one in turn, ``rounds`` times."""
    from django.db import connection

    empty_url = bench.url
    runs: dict[str, list[dict[str, float]]] = {empty_url: [], full_url: []}
    for n in range(rounds):
        for url in (empty_url, full_url):
            use_database(url)
            bench.url, bench.env = url, {**bench.env, "DATABASE_URL": url}
            bench.prepare()
            if url == full_url:
                retime(url)
            runs[url].append(bench.measure(f"round {n + 1}, {database_name(url)}"))
    use_database(empty_url)
    with psycopg_connect(full_url) as conn:
        rows = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'pgjobs_job'")
        size = rows.fetchone()[0]
    connection.close()
    report(medians(runs[empty_url]), medians(runs[full_url]), size, baseline)


#: The kept database's newest two hours, moved to end now (their gaps kept).
RETIME = """
WITH newest AS (SELECT max(created_at) AS at FROM pgjobs_job)
UPDATE pgjobs_job
SET created_at = created_at + (now() - newest.at),
    run_at = run_at + (now() - newest.at),
    attempted_at = attempted_at + (now() - newest.at),
    finished_at = finished_at + (now() - newest.at)
FROM newest
WHERE created_at >= newest.at - interval '2 hours'
"""


def retime(url: str) -> None:
    """Make the kept database's last hour a full hour of traffic again, as when it was
    filled: the dashboard reads the jobs finished in the last hour, and an hour after
    the fill there would be none. Then VACUUM ANALYZE, as after the fill."""
    import psycopg

    start = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no triggers: nobody listens
        moved = conn.execute(RETIME).rowcount
        conn.execute("VACUUM (ANALYZE) pgjobs_job")
    print(f"  retimed: moved the newest {moved:,} jobs to now in "
          f"{time.monotonic() - start:.1f} s; load {load()}", flush=True)  # fmt: skip


def use_database(url: str) -> None:
    """Point Django's connection at ``url``'s database (it reconnects on the next query)."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = database_name(url)
    os.environ["DATABASE_URL"] = url


def psycopg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fill(url: str, rows: int, active: int, chunk: int = 1_000_000) -> None:
    """Insert ``rows`` jobs in chunks (triggers off: nobody listens), then VACUUM ANALYZE."""
    import psycopg

    start = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for lo in range(1, rows + 1, chunk):
            hi = min(lo + chunk, rows + 1)
            conn.execute(FILL, {"rows": rows, "active": active, "lo": lo, "hi": hi})
            print(f"  filled {hi - 1:,} rows, {time.monotonic() - start:.0f} s; load {load()}",
                  flush=True)  # fmt: skip
        conn.execute("VACUUM (ANALYZE) pgjobs_job")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('pgjobs_job'))")
        print(f"  filled and vacuumed in {time.monotonic() - start:.0f} s; "
              f"table with indexes {size.fetchone()[0]}; load {load()}", flush=True)  # fmt: skip


class Bench:
    def __init__(self, url: str, env: dict[str, str], phases: list[str]) -> None:
        self.url, self.env, self.phases = url, env, phases
        self.prepare()

    def prepare(self) -> None:
        """The API token, and a completed job for the job page and the API, in this database."""
        from django_pgjobs.api import tokens
        from django_pgjobs.models import Job

        if not Job.objects.filter(state="completed").exists():
            claims(self.url, count=1)  # claims one job and completes it
        _, self.token = tokens.issue("bench", ["default", "mail", "reports", "claim", "drain"])

    def measure(self, label: str) -> dict[str, float]:
        print(f"{label}: load {load()}", flush=True)
        figures: dict[str, float] = {}
        for phase in self.phases:
            figures.update(getattr(self, phase)())
        figures["load (1 min)"] = os.getloadavg()[0]
        for name, value in figures.items():
            print(f"  {name}: {value:.2f}", flush=True)
        return figures

    def enqueue(self, count: int = 300) -> dict[str, float]:
        from django_pgjobs import Job

        times = []
        for _ in range(count):
            begin = time.perf_counter()
            Job.enqueue("pgjobs_tasks.noop", queue="reports", run_at=far_future())
            times.append((time.perf_counter() - begin) * 1000)
        return {"enqueue p50 (ms)": percentile(times, 0.5),
                "enqueue p99 (ms)": percentile(times, 0.99)}  # fmt: skip

    def claim(self, count: int = 300) -> dict[str, float]:
        times = claims(self.url, count)
        return {"claim p50 (ms)": percentile(times, 0.5),
                "claim p99 (ms)": percentile(times, 0.99)}  # fmt: skip

    def drain(self, jobs: int = 10_000) -> dict[str, float]:
        import psycopg

        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runworker", "--queues=drain",
             "--processes", "2", "--concurrency", "50", "--prefetch", "300"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(4)
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
                begin = time.monotonic()
                conn.execute(INSERT_AVAILABLE, {"queue": "drain", "count": jobs})
                left = (
                    "SELECT EXISTS (SELECT FROM pgjobs_job WHERE queue = 'drain'"
                    " AND state = 'available') OR EXISTS (SELECT FROM pgjobs_job"
                    " WHERE queue = 'drain' AND state = 'executing')"
                )
                deadline = begin + 300
                while conn.execute(left).fetchone()[0] and time.monotonic() < deadline:
                    time.sleep(0.01)
                took = time.monotonic() - begin
        finally:
            os.killpg(worker.pid, 15)
            worker.wait(60)
        return {"W2 drain (jobs/s)": jobs / took}

    def admin(self, repeat: int = 9) -> dict[str, float]:
        from django.urls import reverse

        from django_pgjobs import stats
        from django_pgjobs.models import Job
        from django_pgjobs.states import JobState

        client = admin_client()
        changelist = reverse("admin:pgjobs_job_changelist")
        job = Job.objects.filter(state="completed").order_by("-id").first()
        today = datetime.now(UTC)
        pages = {"admin list": changelist}
        for state in JobState.values:
            pages[f"admin list state={state}"] = f"{changelist}?state={state}"
        for queue in ("default", "mail", "reports"):
            pages[f"admin list queue={queue}"] = f"{changelist}?queue={queue}"
        pages["admin list task=soak_tasks.tick"] = f"{changelist}?task=soak_tasks.tick"
        pages["admin list state+queue"] = f"{changelist}?state=discarded&queue=mail"
        pages["admin list search"] = f"{changelist}?q=soak_tasks.tick"
        pages["admin list page 100"] = f"{changelist}?p=100"
        pages["admin list created today"] = (
            f"{changelist}?created_at__year={today.year}&created_at__month={today.month}"
            f"&created_at__day={today.day}"
        )
        pages["admin dashboard"] = reverse("admin:pgjobs_dashboard")
        pages["admin dashboard data"] = reverse("admin:pgjobs_dashboard_data")
        pages["admin job page"] = reverse("admin:pgjobs_job_change", args=[job.pk])
        figures = {}
        for name, path in pages.items():
            python, backend = process_cpu(), backend_cpu()
            figures[f"{name} (ms)"] = timed(client.get, path, repeat)
            # Load-robust: CPU of this process and of its PostgreSQL backend per page
            # (the warm-up request included: repeat + 1 of them).
            spent = process_cpu() - python + backend_cpu() - backend
            figures[f"{name} (CPU ms)"] = spent / (repeat + 1)
            # Cold: no tally remembered past its cap (stats.OVER_CAP_SECONDS), as for
            # the first view of a page after a quiet spell.
            figures[f"{name} cold (ms)"] = timed(
                client.get, path, repeat, before=stats.forget_over_cap
            )
        return figures

    def api(self, repeat: int = 20) -> dict[str, float]:
        from django.test import Client

        from django_pgjobs.models import Job

        client = Client(headers={"authorization": f"Bearer {self.token}"})
        job = Job.objects.filter(state="completed").order_by("-id").first()
        body = {"task": "pgjobs_tasks.noop", "queue": "reports", "run_at": "2999-01-01T00:00:00Z"}
        return {
            "API GET /jobs/<id> (ms)": timed(client.get, f"/jobs/{job.pk}", repeat),
            "API POST /jobs (ms)": timed(
                lambda path: client.post(path, body, content_type="application/json"),
                "/jobs", repeat, expect=(201, 202, 200),
            ),
        }  # fmt: skip

    def prune(self, seconds: float = 20.0) -> str:
        """Claims alone, then while one day's finished jobs are pruned."""
        from django.db import connection

        from django_pgjobs import maintenance

        quiet = claims(self.url, duration=seconds)
        with connection.cursor() as cursor:
            cursor.execute("SELECT min(created_at) FROM pgjobs_job")
            oldest = cursor.fetchone()[0]
        now = datetime.now(UTC)
        older_than = now - (oldest + timedelta(days=1))
        during: list[float] = []
        done = threading.Event()
        probe = threading.Thread(target=lambda: during.extend(claims(self.url, until=done)))
        probe.start()
        begin = time.monotonic()
        deleted = maintenance.prune_finished(now, older_than)
        took = time.monotonic() - begin
        done.set()
        probe.join()
        # The probe's ~3,800 jobs of its own queue, newer than the fill's: a kept
        # database measured again (--reuse) would have a head of jobs that no queue,
        # task or search filter of the admin pages matches (each read them first: +4 ms).
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM pgjobs_job WHERE queue = 'claim'")
        return (
            f"prune of the oldest day: {deleted:,} jobs in {took:.1f} s "
            f"({deleted / took:,.0f}/s); load {load()}\n"
            f"claim while pruning: p50 {percentile(during, 0.5):.2f} ms, p99 "
            f"{percentile(during, 0.99):.2f} ms, max {max(during):.1f} ms ({len(during)} claims); "
            f"without: p50 {percentile(quiet, 0.5):.2f} ms, p99 {percentile(quiet, 0.99):.2f} ms, "
            f"max {max(quiet):.1f} ms ({len(quiet)} claims)"
        )


def process_cpu() -> float:
    return time.process_time() * 1000


def backend_cpu() -> float:
    """CPU ms (utime + stime, in clock ticks) of Django's PostgreSQL backend."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def far_future() -> datetime:
    return datetime(2999, 1, 1, tzinfo=UTC)


def claims(url: str, count: int = 0, duration: float = 0, until=None) -> list[float]:
    """Claim one job at a time of queue 'claim' (claim + commit timed), then complete it."""
    import psycopg

    times: list[float] = []
    end = time.monotonic() + duration
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(INSERT_AVAILABLE, {"queue": "claim", "count": 1})
        while True:
            if count and len(times) >= count:
                break
            if duration and time.monotonic() >= end:
                break
            if until is not None and until.is_set():
                break
            params = {"queue": "claim", "now": datetime.now(UTC), "limit": 1,
                      "states": ["available"], "worker_id": None,
                      "most": 2_000_000, "inline": INLINE_BYTES}  # fmt: skip
            begin = time.perf_counter()
            with conn.transaction():
                claimed = conn.execute(CLAIM_SQL, params).fetchall()
            times.append((time.perf_counter() - begin) * 1000)
            # Complete it and offer the next: the claim always finds exactly one job.
            conn.execute(
                "UPDATE pgjobs_job SET state = 'completed', finished_at = now() WHERE id = %s",
                (claimed[0][0],),
            )
            conn.execute(INSERT_AVAILABLE, {"queue": "claim", "count": 1})
            time.sleep(0.005)
    return times


def timed(get, path: str, repeat: int, expect=(200,), before=lambda: None) -> float:
    get(path)  # warm: the first request of a page pays for imports and template loading
    times = []
    for _ in range(repeat):
        before()
        begin = time.perf_counter()
        response = get(path)
        times.append((time.perf_counter() - begin) * 1000)
        if response.status_code not in expect:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return statistics.median(times)


def report(empty: dict[str, float], full: dict[str, float], rows: int, baseline: int = 0) -> None:
    first = f"{baseline:,} rows" if baseline else "empty table"
    print(f"\n| measure | {first} | {rows:,} rows | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, before in empty.items():
        after = full[name]
        if name.startswith("load"):
            print(f"| {name} | {before:.2f} | {after:.2f} | |")
            continue
        # For a rate, slower is a smaller number: the ratio is always "how much worse".
        ratio = before / after if "jobs/s" in name else after / before
        flag = " !!" if ratio > 2 else ""
        print(f"| {name} | {before:,.2f} | {after:,.2f} | {ratio:.2f}x{flag} |")


if __name__ == "__main__":
    main()
