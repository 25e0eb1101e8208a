"""PostgreSQL itself restarted or crashed under running workers and a scheduler: every
job still runs, none runs again once its outcome was committed, no tick fires twice,
and the processes carry on by themselves, saying once that the database is away and
once that it is back.

The server restarted is a private cluster of this module's own (the shared one must
not be): PostgreSQL's own binaries (``PGJOBS_TEST_PG_BIN``, default PostgreSQL 15's),
run as the ``postgres`` user when the tests run as root (they refuse to run as root),
with a data directory and socket in a fresh temporary directory, on a free port, fsync
on. Worker and scheduler processes reach it over TCP, as they would a real server.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connections

from django_pgjobs import Job
from django_pgjobs.models import Schedule
from tests.conftest import WorkerProcess, kill_all, wait_until

PG_BIN = Path(os.environ.get("PGJOBS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: The alias this module's own process reaches the private server by.
ALIAS = "restarted"
APPEND = "tests.tasks_for_tests.append_run"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((PG_BIN / name).exists() for name in ("initdb", "pg_ctl", "postgres")),
        reason=f"needs PostgreSQL's server binaries (initdb, pg_ctl) in {PG_BIN}"
        " (PGJOBS_TEST_PG_BIN): the test restarts a private server of its own",
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster of the test's own, in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = free_port()
        # The binaries refuse to run as root.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_owner, str(PG_BIN / program), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)}: {done.stderr}{done.stdout}\n{log}")

    def init(self) -> None:
        # --no-sync: initdb's own files only; the server runs with fsync on (the default).
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
                "shared_buffers = '32MB'\n"
            )

    def pg_ctl(self, *args: str) -> float:
        """Run ``pg_ctl`` (waiting for it to finish); the seconds it took."""
        began = time.monotonic()
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args)
        return time.monotonic() - began

    def url(self, name: str = "pgjobs") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def sql(self, query: str, params: Any = ()) -> list[tuple]:
        """Run ``query`` on a connection of its own (one kept would die with the server)."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def server(django_db_blocker: Any) -> Iterator[Cluster]:
    """The private cluster with a migrated database, reachable here as ``ALIAS``; torn
    down at the end, whatever happened."""
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="pgjobs-restart-"))
    if os.geteuid() == 0:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(root)
    try:
        cluster.init()
        cluster.pg_ctl("start")
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE pgjobs")
        with django_db_blocker.unblock(), reachable_as(ALIAS, cluster.url()):
            from django.core.management import call_command

            call_command("migrate", database=ALIAS, verbosity=0)
            yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def reachable_as(alias: str, url: str) -> Iterator[None]:
    """A DATABASES alias for ``url`` in this process, for the block."""
    config = environ.Env.db_url_config(url)
    default = dict(django_settings.DATABASES["default"])
    config = connections.configure_settings({"default": default, alias: config})[alias]
    django_settings.DATABASES[alias] = config
    connections.settings[alias] = config
    try:
        yield
    finally:
        connections[alias].close()
        del connections[alias]
        connections.settings.pop(alias, None)
        django_settings.DATABASES.pop(alias, None)


@pytest.fixture
def jobs_db(server: Cluster, settings: Any, django_db_blocker: Any) -> Iterator[Cluster]:
    """Jobs enqueued here go to the private server, whose tables start empty."""
    server.sql(
        "TRUNCATE pgjobs_job, pgjobs_schedule, pgjobs_scheduletick, pgjobs_workerprocess,"
        " pgjobs_schedulerprocess CASCADE"
    )
    settings.PGJOBS = {**settings.PGJOBS, "DATABASE": ALIAS}
    with django_db_blocker.unblock():
        yield server
        connections[ALIAS].close()


@pytest.fixture
def start(server: Cluster) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``manage.py <command>`` against the private server; killed at the end."""
    started: list[WorkerProcess] = []

    def start(command: str, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        process_env = {"DATABASE_URL": server.url(), **(env or {})}
        if "DIRECT_DATABASE_URL" in os.environ:  # a PgBouncer run: this server has none
            process_env["DIRECT_DATABASE_URL"] = server.url()
        process = WorkerProcess(*args, command=command, env=process_env)
        started.append(process)
        return process

    yield start
    kill_all(started)


def runs_of(path: Path) -> Counter[str]:
    """How many times each tag ran (tests.tasks_for_tests.append_run's lines)."""
    if not path.exists():
        return Counter()
    return Counter(line.split()[2] for line in path.read_text().splitlines())


def job_ids_in(server: Cluster, state: str) -> set[int]:
    return {row[0] for row in server.sql("SELECT id FROM pgjobs_job WHERE state = %s", [state])}


def count_in(server: Cluster, state: str) -> int:
    return server.sql("SELECT count(*) FROM pgjobs_job WHERE state = %s", [state])[0][0]


def tags_of(server: Cluster, ids: set[int]) -> set[str]:
    rows = server.sql("SELECT args->>1 FROM pgjobs_job WHERE id = ANY(%s)", [list(ids)])
    return {row[0] for row in rows}


def started(process: WorkerProcess) -> bool:
    return " started: " in process.output()


#: A log line that is no news: INFO and DEBUG.
QUIET = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|DEBUG) ")


def trouble_lines(process: WorkerProcess) -> list[str]:
    """What a process logged above INFO, libpq's hint lines (continuations) included."""
    return [line for line in process.output().splitlines() if not QUIET.match(line)]


#: A worker's warning naming the jobs of a claim whose answer was lost with the server.
HANDED_BACK = re.compile(
    r"a claim committed as the connection broke.*job\(s\) ([\d, ]+) handed back"
)


def handed_back(process: WorkerProcess) -> set[int]:
    return {int(pk) for found in HANDED_BACK.findall(process.output()) for pk in found.split(", ")}


def said_once_per_outage(process: WorkerProcess, outages: int, allowed: str = "^$") -> None:
    """The process said the database was unreachable, and back, at most once per outage,
    and nothing else above INFO (but lines matching ``allowed``, and the jobs of a claim
    whose answer was lost): no line per retry."""
    lines = [
        line
        for line in trouble_lines(process)
        if not re.search(allowed, line) and not HANDED_BACK.search(line)
    ]
    away = [line for line in lines if "unreachable (" in line]
    back = [line for line in lines if "reachable again after" in line]
    assert 1 <= len(away) <= outages and len(back) == len(away), "\n".join(lines)
    assert len(lines) == len(away) + len(back), "\n".join(lines)


def report(**figures: Any) -> None:
    """Figures worth reading in the output (pytest -s)."""
    load = os.getloadavg()[0]
    print(" ".join(f"{name}={value}" for name, value in figures.items()), f"load={load:.1f}")


def stay_down(server: Cluster, seconds: float, *processes: WorkerProcess) -> None:
    """The scenario itself: the server stays away for ``seconds``, and the processes
    stay up meanwhile."""
    down_at = time.monotonic()
    while time.monotonic() - down_at < seconds:
        for process in processes:
            assert process.proc.poll() is None, process.output()[-3000:]
        time.sleep(0.2)


def test_jobs_drain_through_a_crash_and_a_fast_restart(jobs_db, start, tmp_path):
    """A few hundred short jobs and some of a second on two workers; the server crashes
    (``-m immediate``: recovery on start) and later restarts (``-m fast``) mid-drain.
    Every job completes; none whose outcome was committed before either restart runs
    again; the workers are still running, and stop cleanly."""
    server = jobs_db
    runs = tmp_path / "runs"
    specs = []
    for n in range(400):
        specs.append({"task": APPEND, "args": [str(runs), f"s{n}", 0.02]})
        if n % 25 == 0:
            specs.append({"task": APPEND, "args": [str(runs), f"l{n}", 1.0]})
    Job.enqueue_many(specs)
    total = len(specs)
    workers = [start("runworker", "--concurrency", "4") for _ in range(2)]

    crashes = []
    for mode, after in (("immediate", 100), ("fast", 250)):
        wait_until(lambda after=after: count_in(server, "completed") >= after, timeout=60)
        committed = job_ids_in(server, "completed")
        executing = job_ids_in(server, "executing")
        took = server.pg_ctl("restart", "-m", mode)
        back_at = time.monotonic()
        done_when_back = count_in(server, "completed")
        wait_until(lambda d=done_when_back: count_in(server, "completed") > d, timeout=30)
        crashes.append((mode, committed, executing, took, time.monotonic() - back_at))

    began = time.monotonic()
    wait_until(lambda: count_in(server, "completed") == total, timeout=60)
    ran = runs_of(runs)
    for mode, committed, executing, took, resumed_in in crashes:
        report(
            restart=mode,
            restart_took=f"{took:.2f}s",
            first_completion_after=f"{resumed_in:.2f}s",
            executing_at_restart=len(executing),
        )
        again = {tag for tag in tags_of(server, committed) if ran[tag] != 1}
        assert not again, f"committed before the {mode} restart, yet ran again: {sorted(again)}"
    report(drain_after_second_restart=f"{time.monotonic() - began:.2f}s")
    assert len(ran) == total, "every job ran"
    duplicates = sorted(tag for tag, count in ran.items() if count > 1)
    report(duplicates=len(duplicates), runs=sum(ran.values()), jobs=total)
    for worker in workers:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert worker.stop() == 0, worker.output()[-3000:]
        said_once_per_outage(worker, outages=2)
        # A claim that committed as the server died: its jobs never started, and were
        # given back at once (not after WORKER_STALE_AFTER), to run once.
        lost = handed_back(worker)
        report(claims_answer_lost=sorted(lost))
        assert all(ran[tag] == 1 for tag in tags_of(server, lost)), lost


def test_a_job_enqueued_after_a_restart_starts_at_once(jobs_db, start, tmp_path):
    """The LISTEN connection dies with the server: it is made again and listens again,
    so a job enqueued once the server is back starts at once, not at the next poll
    (30 s here)."""
    server = jobs_db
    runs = tmp_path / "runs"
    worker = start("runworker", env={"PGJOBS_POLL_INTERVAL": "30"})
    wait_until(lambda: started(worker), timeout=30)
    first = Job.enqueue(APPEND, args=[str(runs), "before", 0])
    wait_until(lambda: Job.objects.using(ALIAS).get(pk=first.pk).state == "completed", 10)

    for mode in ("immediate", "fast", "down"):
        if mode == "down":  # away for a while: every process's retries backed off
            server.pg_ctl("stop", "-m", "immediate")
            stay_down(server, 8, worker)
            server.pg_ctl("start")
        else:
            server.pg_ctl("restart", "-m", mode)
        connections[ALIAS].close()
        enqueued_at = time.monotonic()
        Job.enqueue(APPEND, args=[str(runs), f"after-{mode}", 0])
        wait_until(lambda m=mode: runs_of(runs)[f"after-{m}"] == 1, timeout=40)
        latency = time.monotonic() - enqueued_at
        report(restart=mode, pickup_latency=f"{latency:.2f}s")
        # Before, the LISTEN connection's reconnects backed off to 5 s apart, and the
        # worker loop's to 10 s: 3-5 s after an 8-s outage.
        assert latency < 2.5, f"picked up {latency:.1f}s after the {mode} restart"
    assert worker.stop() == 0, worker.output()[-3000:]
    said_once_per_outage(worker, outages=3)


def test_the_scheduler_and_a_worker_ride_out_the_server_being_down(jobs_db, start, tmp_path):
    """An every-second schedule of each catch-up policy, a scheduler and a worker; the
    server crashes and stays down for a few seconds. Both processes stay up without a
    log line per retry, ticks resume once it is back, no tick fires twice, and the
    ticks missed meanwhile follow the policy: ``all`` fires each, ``latest`` only the
    latest."""
    server = jobs_db
    runs = tmp_path / "runs"
    for policy in ("all", "latest"):
        Schedule.objects.using(ALIAS).create(
            name=f"every-second-{policy}",
            cron="@every 1s",
            task=APPEND,
            args=[str(runs), policy],
            catch_up=policy,
        )
    scheduler = start("runscheduler")
    worker = start("runworker")

    def ticks(policy: str) -> list:
        return [
            row[0]
            for row in server.sql(
                "SELECT tick.fire_at FROM pgjobs_scheduletick tick JOIN pgjobs_schedule s"
                " ON s.id = tick.schedule_id WHERE s.name = %s ORDER BY tick.fire_at",
                [f"every-second-{policy}"],
            )
        ]

    wait_until(lambda: len(ticks("all")) >= 3 and runs_of(runs)["all"] >= 3, timeout=40)
    server.pg_ctl("stop", "-m", "immediate")
    stay_down(server, 4, scheduler, worker)
    server.pg_ctl("start")
    back_at = time.monotonic()
    connections[ALIAS].close()
    last_before = max(ticks("all"))
    wait_until(lambda: any(t > last_before for t in ticks("all")), timeout=30)
    resumed_in = time.monotonic() - back_at
    # Three ticks fired, and run, after the outage.
    first_after = server.sql("SELECT now()")[0][0]
    wait_until(
        lambda: (
            len([t for t in ticks("all") if t >= first_after]) >= 3
            and count_in(server, "completed") == server.sql("SELECT count(*) FROM pgjobs_job")[0][0]
        ),
        timeout=30,
    )
    for process in (scheduler, worker):
        assert process.stop() == 0, process.output()[-3000:]

    every = ticks("all")
    gaps = [b - a for a, b in itertools.pairwise(every) if b - a != timedelta(seconds=1)]
    assert not gaps, f"catch_up=all: every second ticks once: {every}"
    latest = ticks("latest")
    skipped = [b - a for a, b in itertools.pairwise(latest) if b - a > timedelta(seconds=1)]
    ran = runs_of(runs)
    report(
        ticks_resumed_after=f"{resumed_in:.2f}s",
        all_ticks=len(every),
        all_runs=ran["all"],
        latest_ticks=len(latest),
        latest_gaps=[g.total_seconds() for g in skipped],
    )
    assert len(skipped) == 1 and skipped[0] >= timedelta(seconds=3), latest
    assert ran["all"] == len(every) and ran["latest"] == len(latest)
    # The scheduler says what the catch-up policy dropped.
    said_once_per_outage(scheduler, outages=1, allowed="every-second-latest': .* missed")
    said_once_per_outage(worker, outages=1)
