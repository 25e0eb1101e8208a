"""What every benchmark runner shares: the workloads, timing and measuring.

Stdlib only (plus psycopg, which every runner's virtualenv has), because each
queue under test runs in a virtualenv of its own and imports this file from
there. A runner subclasses ``Adapter`` with the few things that differ between
queues (how to enqueue, how to start a worker, how to count finished jobs) and
calls ``main(adapter)``; the workloads themselves are written once, here, so
every queue gets exactly the same treatment.

The runner prints one JSON object on its last line of output; ``run.py``
collects those and prints the comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

#: The environment variable through which a worker's ``stamp`` task learns
#: where to send the instant it started (W3 latency).
STAMP_ADDRESS = "PGJOBS_BENCH_STAMP"


def now() -> float:
    """CLOCK_MONOTONIC: one clock for every process on the machine, immune to NTP steps."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def send_stamp(seq: int) -> None:
    """Called first thing by the latency task of every queue under test."""
    stamp = now()
    host, _, port = os.environ[STAMP_ADDRESS].partition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"{seq} {stamp!r}".encode(), (host, int(port)))


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.005):
    deadline = now() + timeout
    while True:
        value = condition()
        if value:
            return value
        if now() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- databases ------------------------------------------------------------------------


DEFAULT_URL = "postgres://root@127.0.0.1:5432/pgjobs"


# -- the CPU-cost scripts (enqueue_cost.py, w2_cost.py): one system per child process --


def cost_main(
    script: str,
    doc: str,
    measure: Callable[[str, str, int, list[str]], dict[str, Any]],
    *,
    jobs: int,
    tag: str,
    per_run: Callable[[dict[str, Any]], str],
    per_median: Callable[[dict[str, float]], str],
) -> None:
    """The main of a cost script: ``--measure SYSTEM`` (the child's side) prints what
    ``measure(system, url, jobs, scratch_sql)`` returns as JSON; otherwise each system
    of ``--only`` runs ``script --measure`` in its own virtualenv, taking turns
    ``--rounds`` times, and a line per run (``per_run``) and the medians per system
    (``per_median``) are printed. ``--scratch-sql`` statements run on each fresh
    database once the system is installed: to price a trigger or an index by taking
    it away (never how to run)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=jobs)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="pgjobs,pgqueuer", help="comma-separated systems")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--scratch-sql", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.url, args.jobs, args.scratch_sql)))
        return
    systems = args.only.split(",")
    results: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
    for round_ in range(args.rounds):
        # The order reversed every other round (A B, B A, ...).
        for system in systems if round_ % 2 == 0 else systems[::-1]:
            run = _measure_apart(script, system, args.url, tag, args.jobs, args.scratch_sql)
            results[system].append(run)
            print(f"round {round_ + 1} {system:9} {per_run(run)}", flush=True)
    for system, runs in results.items():
        medians = {  # of the figures every run has (a WAL figure may be n/a)
            key: statistics.median(r[key] for r in runs)
            for key in runs[0]
            if all(isinstance(r[key], int | float) for r in runs)
        }
        print(f"median    {system} {runs[0]['version']}: {per_median(medians)}")


def _measure_apart(
    script: str, system: str, base_url: str, tag: str, jobs: int, scratch_sql: list[str]
) -> dict:
    """``script --measure system`` in the system's own virtualenv, on a database of its
    own (``<name>_bench_<tag>_<system>_<pid>``): the figures its last line prints, and
    the load average around it."""
    from run import SYSTEMS, venv_python

    python = venv_python(system, SYSTEMS[system][1])
    url = with_database(base_url, f"{database_name(base_url)}_bench_{tag}_{system}_{os.getpid()}")
    before = os.getloadavg()[0]
    done = subprocess.run(
        [python, script, "--measure", system, f"--url={url}", f"--jobs={jobs}"]
        + [f"--scratch-sql={statement}" for statement in scratch_sql],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (before + os.getloadavg()[0]) / 2
    return result


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def recreate_database(url: str) -> None:
    """Drop and create the database ``url`` names: every run starts from nothing."""
    drop_database(url, create=True)


def drop_database(url: str, *, create: bool = False) -> None:
    """Drop the database ``url`` names (ending its sessions); ``create`` makes it anew."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_scratch_sql(url: str, statements: list[str]) -> None:
    """``--scratch-sql``: statements run on a scratch database before it is measured."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def analyzed_with_backlog(adapter: Adapter, jobs: int) -> None:
    """Empty job tables whose planner statistics were taken with ``jobs`` queued.

    As autovacuum keeps a queue in use analyzed (the shared test server runs without
    it): PostgreSQL's plans for a table it never analyzed, or last saw empty, are
    guesses, and one queue may suffer from them more than another. (TRUNCATE keeps
    the column statistics; the row count is then read off the table's size.)
    """
    import psycopg

    adapter.reset()
    adapter.enqueue_queued(jobs)
    with psycopg.connect(adapter.url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    adapter.reset()


def checkpoint(url: str) -> None:
    """Write out what the previous phase left in the WAL before a timed phase starts.

    Otherwise the checkpoint that the last phase's WAL (10,000 commits) calls for
    may land in the middle of the next one, for whichever system comes next.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def libpq_env(url: str) -> dict[str, str]:
    """PG* variables for tools that read libpq's environment (pgbench, pgqueuer)."""
    parts = urlsplit(url)
    env = {"PGDATABASE": parts.path.lstrip("/"), "PGPORT": str(parts.port or 5432)}
    if parts.hostname:
        env["PGHOST"] = parts.hostname
    if parts.username:
        env["PGUSER"] = parts.username
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return env


# -- django-pgjobs' own scripts (scale, soak, sustained, admin_changelist) ---------------
# Django is imported inside these functions: the runners of other queues import this
# file from virtualenvs without it.

#: The columns attempt, max_attempts, run_at, created_at, attempted_at, finished_at and
#: errors of a filled job row, from its ``state`` and ``created`` time: how a finished,
#: failed or waiting job of the last days looks (a failure's traceback included).
FILLED_JOB_COLUMNS = """
       CASE WHEN state IN ('available', 'scheduled') THEN 0
            ELSE 1 + (state = 'discarded')::int * 2 END,
       3,
       created + CASE WHEN state = 'scheduled' THEN interval '2 days' ELSE interval '0' END,
       created,
       CASE WHEN state IN ('available', 'scheduled') THEN NULL
            ELSE created + interval '1 second' END,
       CASE WHEN state IN ('completed', 'discarded', 'cancelled')
            THEN created + interval '2 seconds' END,
       CASE WHEN state IN ('discarded', 'retryable') THEN jsonb_build_array(jsonb_build_object(
            'attempt', 1, 'at', created, 'error', 'RuntimeError: the flaky service said no',
            'traceback', repeat('  File "app/tasks.py", line 12, in flaky' || chr(10), 8)))
            ELSE '[]'::jsonb END"""


def setup_django(url: str, settings_module: str) -> dict[str, str]:
    """Set Django up in this process on the database ``url``; returns the environment
    that does the same for a child (``manage.py runworker``, a producer)."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR / "runners"), str(BENCH_DIR), str(ROOT)]),
    }
    os.environ.update(env)
    import django

    django.setup()
    return env


def scratch_django(name: str, settings_module: str) -> tuple[str, dict[str, str]]:
    """A new database ``pgjobs_bench_<name>_p<pid>`` (on ``$DATABASE_URL``'s server),
    migrated, with Django set up on it: its URL and the environment for children.
    The caller drops it (``drop_database``) when done."""
    base = os.environ.get("DATABASE_URL", "postgres://root@127.0.0.1:5432/postgres")
    url = with_database(base, f"pgjobs_bench_{name}_p{os.getpid()}")
    drop_database(url, create=True)
    try:
        env = setup_django(url, settings_module)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    except BaseException:  # the caller's try has not begun: the database is ours to drop
        drop_database(url)
        raise
    return url, env


def admin_client() -> Any:
    """Django's test client, logged in as the superuser ``bench`` (made if missing)."""
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", "bench@example.com", "bench"
    )
    client = Client()
    client.force_login(user)
    return client


def offer_at_rate(
    rate: float,
    seconds: float,
    enqueue: Callable[[int, int], Any],
    each_tick: Callable[[int, int], Any] | None = None,
    tick: float = 0.01,
) -> int:
    """Offer ``rate`` jobs/s for ``seconds``: every ``tick`` seconds one call of
    ``enqueue(first, count)`` with the jobs due by then (one bulk call, so that the
    rate offered does not hang on how fast one client commits single jobs), then
    ``each_tick(ticks, offered)``. Returns how many jobs were offered."""
    offered, ticks = 0, 0
    start = now()
    while (elapsed := now() - start) < seconds:
        due = int(elapsed * rate) - offered
        if due > 0:
            enqueue(offered, due)
            offered += due
        if each_tick is not None:
            each_tick(ticks, offered)
        ticks += 1
        time.sleep(max(0.0, start + ticks * tick - now()))
    return offered


# -- processes -------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def peak_rss_mb(pid: int) -> float:
    """Largest peak resident set (VmHWM) of any process in the tree, in MB."""
    peaks = []
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=0.0)


@dataclass
class Workers:
    """Worker processes of the queue under test, started in their own process group."""

    procs: list[subprocess.Popen]
    log: Path

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)

    def peak_rss_mb(self) -> float:
        return max(peak_rss_mb(proc.pid) for proc in self.procs)

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = now() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - now()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_workers(commands: list[list[str]], env: dict[str, str], cwd: Path, log: Path) -> Workers:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("wb")
    procs = [
        subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() reaches forked children too
        )
        for command in commands
    ]
    return Workers(procs, log)


class StampListener:
    """Receives the ``seq instant`` datagrams the latency task sends when it starts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def wait_for(self, seq: int, timeout: float) -> float:
        deadline = now() + timeout
        while True:
            remaining = deadline - now()
            if remaining <= 0:
                raise TimeoutError(f"job {seq} did not start within {timeout}s")
            self.sock.settimeout(remaining)
            data = self.sock.recv(128).decode().split()
            if int(data[0]) == seq:
                return float(data[1])

    def close(self) -> None:
        self.sock.close()


# -- the queue under test ---------------------------------------------------------------


@dataclass
class Config:
    """A way to run workers: how many processes, how much concurrency each."""

    processes: int
    concurrency: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: A name shown instead of the options (e.g. "bare runworker").
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return f"{self.processes}p x {self.concurrency}{extra}"


class Adapter:
    """What differs between queues. Subclasses fill these in."""

    name = "?"
    version = "?"
    #: Configurations the tuning sweep (``run.py --tune``) tries on the drain.
    drain_configs: list[Config] = []
    #: The best of them, chosen from that sweep (see bench/README.md): what every
    #: round of ``run.py`` runs W2 with.
    best: Config = Config(1, 1)
    #: Configurations W4 (a fixed offered rate) runs with; empty: W4 is not run.
    sustained_configs: list[Config] = []
    #: The configuration of the idle worker in the latency workload.
    latency_config: Config = Config(1, 10)
    #: LISTEN connections each worker process opens (0: it only polls).
    listeners_per_process = 1
    #: Fraction of the job counts this system runs W1 one-per-transaction and W2
    #: with (a slow one would take many minutes); its figures are rates all the same.
    scale = 1.0

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir

    def install(self) -> None:
        """Create the queue's tables in the (new, empty) database."""
        raise NotImplementedError

    def reset(self) -> None:
        """Empty the job tables between repetitions."""
        raise NotImplementedError

    def enqueue_each(self, count: int) -> None:
        """``count`` no-op jobs, each in its own transaction."""
        raise NotImplementedError

    def enqueue_bulk(self, count: int) -> bool:
        """``count`` no-op jobs through the bulk API; False if the queue has none."""
        raise NotImplementedError

    def enqueue_queued(self, count: int) -> None:
        """``count`` no-op jobs queued for a drain, the fastest way the queue allows."""
        if not self.enqueue_bulk(count):
            self.enqueue_each(count)

    def enqueue_stamp(self, seq: int) -> None:
        """One latency job (its task calls ``send_stamp(seq)``), committed on return."""
        raise NotImplementedError

    def done(self) -> int:
        """How many jobs have finished successfully."""
        raise NotImplementedError

    def busy(self) -> bool:
        """Whether a job is still queued or running: what the drain polls every 50 ms.

        An EXISTS, not a count: a count of finished jobs grows with the drain and
        took PostgreSQL up to 2 ms a poll, a few percent of the box that none of
        the queues under test could use.
        """
        raise NotImplementedError

    def remaining(self) -> int:
        """How many jobs are still queued or running (W4's backlog)."""
        raise NotImplementedError

    def outcome_xids(self) -> list[int]:
        """For each job that finished successfully, the transaction that wrote that:
        the ``xmin`` (``::text::bigint``) of the row that records it. W2 reads when
        each of those transactions ended (``TransactionEnds``)."""
        raise NotImplementedError

    def enqueue_stamps(self, first: int, count: int) -> None:
        """Latency jobs ``first .. first + count - 1`` in one bulk call (W4)."""
        raise NotImplementedError

    def worker_commands(self, config: Config) -> list[list[str]]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {}

    def config_env(self, config: Config) -> dict[str, str]:
        """Environment for workers of one configuration (its ``extra`` options)."""
        return {}

    def listening(self) -> int:
        """How many connections of the database are LISTENing (worker readiness)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query ILIKE 'listen%%'"
            ).fetchone()[0]

    def close(self) -> None:
        pass


# -- the workloads --------------------------------------------------------------------


@contextlib.contextmanager
def running(adapter: Adapter, config: Config, env: dict[str, str] | None = None) -> Iterator:
    """Workers started, connected and warmed up (their task code imported)."""
    log = adapter.workdir / f"{adapter.name}-worker.log"
    workers = start_workers(
        adapter.worker_commands(config),
        {**adapter.worker_env(), **adapter.config_env(config), **(env or {})},
        adapter.workdir,
        log,
    )
    try:
        expected = adapter.listeners_per_process * config.processes
        wait_until(
            lambda: not workers.alive() or adapter.listening() >= expected,
            60,
            f"{expected} LISTEN connections",
            interval=0.05,
        )
        before = adapter.done()
        warm = 4 * config.processes
        adapter.enqueue_queued(warm)
        wait_until(
            lambda: not workers.alive() or adapter.done() >= before + warm,
            60,
            "warm-up jobs",
            interval=0.02,
        )
        if not workers.alive():
            raise RuntimeError(f"{adapter.name} worker exited:\n{workers.tail()}")
        if not adapter.listeners_per_process:
            # Nothing shows when every process is ready: give slow starters time.
            time.sleep(2.0)
        yield workers
    finally:
        workers.stop()


#: Jobs each W1 path enqueues, untimed, before it is timed.
WARM_UP_JOBS = 100


def w1_enqueue(adapter: Adapter, jobs: int, each_jobs: int) -> dict[str, float | None]:
    # Both paths once before they are timed, as workers are warmed up before W2 and as
    # a web process has enqueued before: a system's first call in a process pays for
    # imports, caches and prepared statements (ours 40 ms, 10 times a later call), which
    # a long-lived process pays once, not once per 3,000 jobs.
    adapter.enqueue_each(WARM_UP_JOBS)
    adapter.reset()
    checkpoint(adapter.url)
    started = now()
    adapter.enqueue_each(each_jobs)
    each = each_jobs / (now() - started)
    supported = adapter.enqueue_bulk(min(WARM_UP_JOBS, jobs))
    adapter.reset()
    checkpoint(adapter.url)
    started = now()
    if supported:
        adapter.enqueue_bulk(jobs)
    bulk = jobs / (now() - started) if supported else None
    adapter.reset()
    return {"each": each, "bulk": bulk}


def w2_drain(adapter: Adapter, config: Config, jobs: int) -> dict[str, float]:
    """Idle, warmed-up workers; ``jobs`` no-op jobs committed at once; time to all done.

    ``jobs_per_s`` is the whole drain, from the enqueue's commit to the last job
    done, start-up included (the first claims, prefetch ramping up). ``steady_per_s``
    is the rate between 10% and 90% of the jobs done: the pace once running,
    without the start and the tail. A job is done when the transaction that wrote
    its success ended (``TransactionEnds``), read off after the drain: counting
    finished jobs while they finish would cost the server a scan per count that
    grows with the table.
    """
    analyzed_with_backlog(adapter, jobs)
    checkpoint(adapter.url)
    with running(adapter, config) as workers, TransactionEnds(adapter.url) as ends:
        warm = set(adapter.outcome_xids())
        adapter.enqueue_queued(jobs)
        started = now()
        wait_until(
            lambda: not adapter.busy() or not workers.alive(), 600, "the drain", interval=0.05
        )
        if not workers.alive():
            raise RuntimeError(f"{adapter.name} worker exited:\n{workers.tail()}")
        rss = workers.peak_rss_mb()
        # Read while the workers run: procrastinate's rows are written again as its
        # workers stop (their worker_id set to NULL as they unregister).
        xids = [xid for xid in adapter.outcome_xids() if xid not in warm]
    if len(xids) != jobs:
        raise RuntimeError(f"{adapter.name}: {len(xids)} of {jobs} jobs succeeded")
    done_at = sorted(ends.ended_at(xids))
    adapter.reset()
    return {
        "jobs_per_s": jobs / (done_at[-1] - started),
        "steady_per_s": steady_rate(done_at),
        "rss_mb": rss,
    }


def steady_rate(done_at: list[float]) -> float:
    """Jobs/s from the instant 10% of the jobs were done to the instant 90% were.

    ``done_at`` is sorted: the instant each job was done.
    """
    first = done_at[max(0, round(0.1 * len(done_at)) - 1)]
    last = done_at[max(0, round(0.9 * len(done_at)) - 1)]
    if last <= first:
        return 0.0
    done_in_window = round(0.9 * len(done_at)) - round(0.1 * len(done_at))
    return done_in_window / (last - first)


class TransactionEnds:
    """When each transaction of a database ended, read off after a run.

    A thread takes the server's snapshot (``pg_current_snapshot()``: which
    transactions are still running) every 2 ms on a connection of its own: a
    transaction had ended by the first snapshot that no longer lists it (the
    instant is the middle of that snapshot's round trip). A snapshot costs the
    server a few microseconds whatever the tables hold. Polling a count of
    unfinished jobs instead, as this drain did until 2026-12-06, cost PostgreSQL
    2.5-7 ms per count with 20,000 jobs and 50-95 ms with 200,000: most of a core
    of this 2-core box, taken from the queue under test.
    """

    def __init__(self, url: str, interval: float = 0.002) -> None:
        self.url = url
        self.interval = interval
        self.snapshots: list[tuple[float, int, frozenset[int]]] = []  # (at, xmax, running)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TransactionEnds:
        import psycopg

        self._conn = psycopg.connect(self.url, autocommit=True)
        self._take()
        self._thread.start()
        return self

    @property
    def backend_pid(self) -> int:
        """Its session's backend: the measuring's, not the system's under test."""
        return self._conn.info.backend_pid

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()  # after the last transaction the caller waited for
        self._conn.close()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def _take(self) -> None:
        sent = now()
        (snapshot,) = self._conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        at = (sent + now()) / 2
        _xmin, xmax, running = snapshot.split(":")
        self.snapshots.append((at, int(xmax), frozenset(int(x) for x in running.split(",") if x)))

    def ended_at(self, xids: list[int]) -> list[float]:
        """For each 32-bit xid (a row's ``xmin``), the instant its transaction had ended."""
        last_xmax = self.snapshots[-1][1]
        ends = {xid: self._end_of(xid, last_xmax) for xid in set(xids)}
        return [ends[xid] for xid in xids]

    def _end_of(self, xid: int, last_xmax: int) -> float:
        full = (last_xmax & ~0xFFFFFFFF) | xid  # the 64-bit xid: the epoch added
        if full >= last_xmax:
            full -= 1 << 32
        for at, xmax, running in self.snapshots:
            if full < xmax and full not in running:
                return at
        raise RuntimeError(f"transaction {xid} had not ended by the last snapshot")


def w3_latency(adapter: Adapter, jobs: int) -> dict[str, float]:
    """An idle worker; one job at a time; commit-to-start latency."""
    adapter.reset()
    listener = StampListener()
    try:
        with running(adapter, adapter.latency_config, {STAMP_ADDRESS: listener.address}):
            latencies = []
            for seq in range(jobs):
                base = adapter.done()
                adapter.enqueue_stamp(seq)
                committed = now()
                latencies.append(listener.wait_for(seq, 10) - committed)
                # Let the worker finish and go idle again before the next job.
                wait_until(lambda b=base: adapter.done() > b, 10, f"job {seq} to finish")
    finally:
        listener.close()
    adapter.reset()
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99), "max_ms": max(ms)}


def w4_sustained(adapter: Adapter, config: Config, rate: float, seconds: float) -> dict:
    """A producer offers ``rate`` jobs/s for ``seconds`` while warmed-up workers drain.

    Every 10 ms the producer enqueues what is due in one bulk call (so that the
    rate offered does not depend on how fast one client commits single jobs);
    every 100 ms it samples the backlog (jobs queued or running). Each job is a
    latency job: its task sends the instant it started, and its end-to-end
    latency is that instant minus the commit of the bulk call that enqueued it.
    """
    adapter.reset()
    checkpoint(adapter.url)
    listener = StampListener()
    listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    starts: dict[int, float] = {}

    def receive() -> None:
        listener.sock.settimeout(None)
        while True:
            try:
                data = listener.sock.recv(128).decode().split()
            except OSError:
                return
            starts[int(data[0])] = float(data[1])

    try:
        with running(adapter, config, {STAMP_ADDRESS: listener.address}) as workers:
            receiver = threading.Thread(target=receive, daemon=True)
            receiver.start()
            starts.clear()  # the warm-up jobs send no stamps, but be sure
            committed: list[tuple[int, int, float]] = []  # first seq, count, commit time
            backlog: list[int] = []

            def enqueue(first: int, count: int) -> None:
                adapter.enqueue_stamps(first, count)
                committed.append((first, count, now()))

            def sample(ticks: int, offered: int) -> None:
                if ticks % 10 == 0:
                    backlog.append(adapter.remaining())

            start = now()
            offered = offer_at_rate(rate, seconds, enqueue, sample)
            wait_until(
                lambda: adapter.remaining() == 0 or not workers.alive(),
                300,
                "the backlog to drain",
                interval=0.05,
            )
            late = now() - start - seconds
            # The last datagrams may still be on their way (none should be lost).
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: len(starts) >= offered, 2, "the last stamps", interval=0.05)
            if not workers.alive():
                raise RuntimeError(f"{adapter.name} worker exited:\n{workers.tail()}")
            rss = workers.peak_rss_mb()
    finally:
        listener.close()
    adapter.reset()
    ms = [
        (starts[seq] - at) * 1000
        for first, count, at in committed
        for seq in range(first, first + count)
        if seq in starts
    ]
    return {
        "offered": offered,
        "stamps_missing": offered - len(ms),
        "max_backlog": max(backlog, default=0),
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "done_late_s": late,
        "rss_mb": rss,
    }


def run_suite(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    """The workloads on a new database, dropped when they end, however they end (a
    runner that failed part way left its database on the server)."""
    recreate_database(adapter.url)
    try:
        return run_workloads(adapter, args)
    finally:
        try:
            adapter.close()
        finally:
            if not args.keep_database:
                drop_database(adapter.url)


def run_workloads(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.install()
    result: dict[str, Any] = {"system": adapter.name, "version": adapter.version}
    log = sys.stderr
    jobs = max(1, round(args.jobs * adapter.scale))
    result["jobs"] = jobs

    if args.tune:
        # Every configuration of the sweep on W2, ``reps`` times each.
        result["tune"], result["best"], result["reps"] = {}, adapter.best.label, args.reps
        wanted = {label.strip() for label in args.tune_configs.split(",") if label.strip()}
        configs = [c for c in adapter.drain_configs if not wanted or c.label in wanted]
        # Repetitions go round the configurations, so that a minute of a slower box
        # falls on several configurations' drains rather than on all of one's.
        runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in configs}
        for _ in range(args.reps):
            for config in configs:
                runs[config.label].append(run := w2_drain(adapter, config, jobs))
                print(f"[{adapter.name}] W2 {config.label}: {run}", file=log, flush=True)
        for label, done in runs.items():
            result["tune"][label] = {k: statistics.median(r[k] for r in done) for k in done[0]}
    workloads = set(args.workloads.split(","))
    if "w1" in workloads:
        each_jobs = max(1, round((args.each_jobs or args.jobs) * adapter.scale))
        result["each_jobs"] = each_jobs
        w1 = w1_enqueue(adapter, args.jobs, each_jobs)
        result["w1_each"], result["w1_bulk"] = w1["each"], w1["bulk"]
        print(f"[{adapter.name}] W1 {w1}", file=log, flush=True)
    if "w2" in workloads:
        w2 = w2_drain(adapter, adapter.best, jobs)
        result["w2_config"] = adapter.best.label
        result.update({f"w2_{k}": v for k, v in w2.items()})
        print(f"[{adapter.name}] W2 {adapter.best.label}: {w2}", file=log, flush=True)
    if "w2" in workloads and args.large_jobs:
        # The same drain of a backlog ten times larger: where the rate once running
        # is measured over seconds, not half of one, and a queue table's growth shows.
        large = max(1, round(args.large_jobs * adapter.scale))
        w2l = w2_drain(adapter, adapter.best, large)
        result["large_jobs"] = large
        result.update({f"w2l_{k}": v for k, v in w2l.items() if k != "rss_mb"})
        print(f"[{adapter.name}] W2 of {large:,}: {w2l}", file=log, flush=True)
    if "w3" in workloads and args.latency_jobs:
        w3 = w3_latency(adapter, args.latency_jobs)
        result.update({f"w3_{k}": v for k, v in w3.items()})
        print(f"[{adapter.name}] W3 {w3}", file=log, flush=True)
    if "w4" in workloads and args.w4_seconds:
        result["w4"] = {}
        for config in adapter.sustained_configs:
            w4 = w4_sustained(adapter, config, args.w4_rate, args.w4_seconds)
            result["w4"][config.label] = w4
            print(f"[{adapter.name}] W4 {config.label}: {w4}", file=log, flush=True)
    return result


def main(make_adapter: Callable[[str, Path], Adapter]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="database URL (it is dropped and created)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--large-jobs", type=int, default=0, help="W2 again, this many; 0: not")
    parser.add_argument("--each-jobs", type=int, default=0, help="W1 one per transaction")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--reps", type=int, default=1, help="--tune: drains per configuration")
    parser.add_argument("--tune", action="store_true", help="W2 with every drain configuration")
    parser.add_argument("--tune-configs", default="", help="--tune: only these labels")
    parser.add_argument("--workloads", default="w1,w2,w3,w4", help="which ones to run")
    parser.add_argument("--w4-rate", type=float, default=2000.0, help="W4: jobs/s offered")
    parser.add_argument("--w4-seconds", type=float, default=0.0, help="W4: 0 leaves it out")
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / ".work")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    adapter = make_adapter(args.url, args.workdir)
    result = run_suite(adapter, args)
    print(json.dumps(result))
