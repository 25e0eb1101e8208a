"""Fixtures: in-process workers, real worker processes, a second connection, deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import psycopg.sql
import pytest
from django.db import connection, connections

from django_pgjobs import db, stats
from django_pgjobs.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def optional_dependencies() -> dict[str, list[str]]:
    """pyproject.toml's extras: what an install hint must name, since a line like
    ``pip install "django-pgjobs[prometheus]"`` finds nothing until it is on PyPI."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["optional-dependencies"]


def maintenance_connection(settings: dict[str, Any]) -> psycopg.Connection:
    """An autocommit connection to the server's ``postgres`` database, as the Django
    database ``settings`` (a settings dict) would connect: for statements about other
    databases (create, drop, the sessions in one)."""
    return psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Drop the test databases that runs on this host left when they died."""
    from django.conf import settings

    from testproject.testdb import is_leftover

    with maintenance_connection(settings.DATABASES["default"]) as admin:
        names = [row[0] for row in admin.execute("SELECT datname FROM pg_database")]
        for name in filter(is_leftover, names):
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


def on_another_connection(work: Callable[[], Any], timeout: float = 30.0) -> Any:
    """What ``work()`` returns, run and committed on a connection of its own (a
    thread's), while the caller's transaction stays open: a holder the caller's
    snapshot predates, say."""
    done: list[Any] = []

    def run() -> None:
        try:
            done.append(work())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout)
    assert done, "the other connection did not finish its work"
    return done[0]


#: For a test that ends server sessions it means to be the worker's
#: (pg_terminate_backend): behind PgBouncer in transaction mode a server session serves
#: any client, the test's own included (ended, it closed the test's connection and
#: failed every later test of the run), and none is the worker's alone.
direct_sessions_only = pytest.mark.skipif(
    "DIRECT_DATABASE_URL" in os.environ,
    reason="ends a worker's server sessions: behind PgBouncer they serve the test too",
)


@contextlib.contextmanager
def cancelled_once_running(text: str, timeout: float = 30.0) -> Iterator[None]:
    """Within the block, an operator's ``pg_cancel_backend`` of the first statement
    seen running (or waiting for a lock) whose text holds ``text``, from a thread of
    its own: as a DBA stops a slow query, before its time limit."""
    stop = threading.Event()

    def cancel() -> None:
        with psycopg.connect(**db.connection_params(), autocommit=True) as own:
            deadline = time.monotonic() + timeout
            while not stop.is_set() and time.monotonic() < deadline:
                row = own.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE state = 'active'"
                    " AND datname = current_database()"  # not another run's test on the server
                    " AND pid <> pg_backend_pid() AND strpos(query, %s) > 0"
                    # Nobody stops an EXPLAIN of a millisecond (an estimate's): caught
                    # by chance, it failed the statement the test means to leave be.
                    " AND query NOT ILIKE 'EXPLAIN%%' LIMIT 1",
                    [text],
                ).fetchone()
                if row:
                    return
                stop.wait(0.01)

    thread = threading.Thread(target=cancel)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout)


@pytest.fixture(autouse=True)
def tallies_counted_afresh() -> None:
    """A count one test found past its cap is not taken as past it by the next one
    (``stats.OVER_CAP_SECONDS``): the tests' tables are rolled back between them."""
    stats.forget_over_cap()


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def worker(db: None) -> Worker:
    """A worker that is not started: use ``run_once``/``drain`` to run jobs inline."""
    return Worker(concurrency=10)


@pytest.fixture
def second_connection(transactional_db: None) -> Iterator[psycopg.Connection]:
    """A raw connection to the test database, separate from Django's (tests LISTEN
    on it: behind PgBouncer, straight to PostgreSQL, as LISTEN_DATABASE)."""
    behind_pgbouncer = "DIRECT_DATABASE_URL" in os.environ
    conn = psycopg.connect(
        **db.connection_params("listen" if behind_pgbouncer else None), autocommit=True
    )
    yield conn
    conn.close()


@pytest.fixture
def threaded_worker(transactional_db: None) -> Iterator[Callable[..., Worker]]:
    """Start Worker.run() on a background thread; stopped at teardown."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(**options: Any) -> Worker:
        worker = Worker(**options)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        wait_until(lambda: worker._notifier is not None and worker._notifier.connected.is_set())
        return worker

    yield start
    for worker, thread in started:
        worker.request_stop()
        thread.join(15)
        assert not thread.is_alive(), "worker thread did not stop:\n" + thread_stacks()


def thread_stacks() -> str:
    import traceback

    frames = sys._current_frames()
    return "\n".join(
        f"--- {thread.name}\n" + "".join(traceback.format_stack(frames[thread.ident], limit=8))
        for thread in threading.enumerate()
        if thread.ident in frames
    )


class WorkerProcess:
    """A real ``manage.py runworker`` (or ``command``) process against the test database;
    ``prefix`` runs it through another program (``ip netns exec ...``) that execs it."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        command: str = "runworker",
        prefix: Sequence[str] = (),
    ) -> None:
        self.log = ROOT / ".pytest_cache" / f"{command}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log.parent.mkdir(exist_ok=True)
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(ROOT / "manage.py"), command, *args],
            cwd=ROOT,
            env={**os.environ, **test_database_env(), **(env or {})},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Its own process group: what it forks is killed with it at the end of
            # the test, even when it died first and left them behind.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_file.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        # A signal that arrives before the worker installed its handlers (a slow
        # start on a loaded machine) kills it outright: wait until it registered.
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if " started: " in self.output():  # logged once the handlers are in place
                break
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)


def proc_stat(pid: int | str) -> list[str] | None:
    """Linux: the fields of ``/proc/<pid>/stat`` after the command's name (state,
    parent pid, ...); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has ended)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


#: Environment for worker processes that find dead peers within a couple of seconds
#: (heartbeats every 0.3 s, stale after 1.5 s, rescue passes every 0.3 s).
FAST_RESCUE = {
    "PGJOBS_HEARTBEAT_INTERVAL": "0.3",
    "PGJOBS_WORKER_STALE_AFTER": "1.5",
    "PGJOBS_RESCUE_INTERVAL": "0.3",
    "PGJOBS_POLL_INTERVAL": "0.5",
}


def test_database_env() -> dict[str, str]:
    """Environment that points a child process at the test database."""
    env = {"DATABASE_URL": database_url(connection.settings_dict), "PYTHONUNBUFFERED": "1"}
    if "DIRECT_DATABASE_URL" in os.environ:  # behind PgBouncer: LISTEN goes direct
        from django.db import connections

        env["DIRECT_DATABASE_URL"] = database_url(connections["listen"].settings_dict)
    return env


def database_url(settings: dict[str, Any]) -> str:
    user = quote(settings["USER"] or "", safe="")
    password = quote(settings["PASSWORD"] or "", safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@"
    host = quote(settings["HOST"] or "", safe="")  # a socket directory is a path
    return f"postgres://{credentials}{host}:{settings['PORT'] or 5432}/{settings['NAME']}"


@pytest.fixture(scope="session", autouse=True)
def pgbouncer_lets_go_of_the_test_database(django_db_setup: None) -> Iterator[None]:
    """Behind PgBouncer its idle server connections hold the test database open,
    and dropping it would fail: end them first (this runs before the drop)."""
    yield
    if "DIRECT_DATABASE_URL" not in os.environ:
        return
    name = connection.settings_dict["NAME"]
    with psycopg.connect(os.environ["DIRECT_DATABASE_URL"], autocommit=True) as direct:
        direct.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )


@pytest.fixture
def worker_process(transactional_db: None) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str, **kwargs: Any) -> WorkerProcess:
        process = WorkerProcess(*args, **kwargs)
        started.append(process)
        return process

    yield start
    kill_all(started)


def kill_all(processes: list[WorkerProcess]) -> None:
    """Kill what a test started and its process groups (--processes children, job
    processes), whatever the test left running."""
    for process in processes:
        if process.proc.poll() is None:
            process.stop(signal.SIGKILL, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


# Local HTTP and SMTP servers for connector tests.
from tests.peers import http_peer, smtp_peer  # noqa: E402, F401

# A site's own SQL (its triggers on the job table), dropped at the test's end.
from tests.site_database import site_sql  # noqa: E402, F401
