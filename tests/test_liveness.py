"""Outages and dead network paths, with real worker processes: outcomes are never
dropped while their worker lives, a silent connection is noticed, a worker that
can't reach the database for longer than the stale limit exits for a restart."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from psycopg import sql

from django_pgjobs import Job, db, execution, liveness
from django_pgjobs.models import WorkerProcess
from django_pgjobs.states import JobState
from testproject.demo.tasks import add
from tests import conftest
from tests.pgproxy import PgProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = {
    "PGJOBS_HEARTBEAT_INTERVAL": "0.3",
    "PGJOBS_RESCUE_INTERVAL": "0.3",
    "PGJOBS_POLL_INTERVAL": "0.5",
}


@pytest.fixture
def proxy() -> Iterator[PgProxy]:
    through = PgProxy()
    yield through
    through.close()


def url_through(proxy: PgProxy) -> str:
    url = conftest.test_database_env()["DATABASE_URL"]
    host_and_port = url.split("@", 1)[1].split("/", 1)[0]
    return url.replace(host_and_port, f"127.0.0.1:{proxy.port}", 1)


def state(job: Job) -> str:
    return Job.objects.get(pk=job.pk).state


def test_an_outcome_is_written_after_an_outage_longer_than_a_minute(worker_process, wait):
    """The completer used to give up after 60 s of outage, leaving the job executing
    under its live worker's lease for good."""
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "600"}
    process = worker_process("--concurrency", "2", env=env)
    job = Job.enqueue("tests.tasks_for_tests.blocked", args=[2])
    wait(lambda: state(job) == JobState.EXECUTING, timeout=30)
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]
    params = {**db.connection_params(), "dbname": "postgres"}
    with psycopg.connect(**params, autocommit=True) as admin:  # the server goes away
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> %s",
                [name, ours],
            )
            # The outage lasts longer than the completer's old retry window: a fixed
            # duration is the point here, not a condition to wait for.
            time.sleep(execution.OUTAGE_WINDOW + 5)
            assert process.proc.poll() is None, process.output()
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
    # Its outcome is written, not dropped: completed, or (when the job's own thread
    # met the outage while tidying up its connections) a failed attempt to retry.
    wait(lambda: state(job) in (JobState.COMPLETED, JobState.RETRYABLE), timeout=60)
    done = Job.objects.get(pk=job.pk)
    assert done.result == "finished" or done.errors, process.output()[-3000:]
    assert process.stop() == 0, process.output()


def test_a_job_its_live_worker_no_longer_holds_is_returned_to_the_queue(
    threaded_worker, wait, settings
):
    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.1, "RESCUE_INTERVAL": 0.1}
    worker = threaded_worker(poll_interval=0.2)
    forgotten = add.enqueue(2, 3)
    # Claimed by this worker long ago, yet not among the jobs it runs: an outcome
    # dropped by a bug leaves exactly this.
    Job.objects.filter(pk=forgotten.pk).update(
        state=JobState.EXECUTING,
        worker=worker.record.pk,
        lease=uuid.uuid4(),
        attempt=1,
        attempted_at=timezone.now() - timedelta(minutes=5),
    )
    wait(lambda: state(forgotten) == JobState.COMPLETED, timeout=10)
    forgotten.refresh_from_db()
    assert forgotten.result == 5 and forgotten.attempt == 2
    assert "no longer held this job" in forgotten.errors[0]["error"]


def test_a_worker_whose_outcomes_wait_holds_at_most_twice_its_capacity(db):
    from django_pgjobs.worker import Worker

    worker = Worker(concurrency=3, prefetch=2)
    worker.running = {n: None for n in range(12)}  # type: ignore[misc]
    worker._returned = set(range(12))
    assert worker.free_slots() == 5 - 12 + 5  # only 5 returned jobs free a slot
    worker.running = {n: None for n in range(10)}  # type: ignore[misc]
    worker._returned = set(range(10))
    assert worker.free_slots() == 0


def test_a_silent_listen_connection_is_noticed_and_replaced(worker_process, wait, proxy):
    env = {
        **FAST,
        "PGJOBS_POLL_INTERVAL": "60",  # a pickup within seconds can only be LISTEN's
        "LISTEN_DATABASE_URL": url_through(proxy),
    }
    process = worker_process(env=env)
    wait(lambda: " started: " in process.output() and proxy.connections() >= 1, timeout=30)
    first = add.enqueue(1, 1)
    wait(lambda: state(first) == JobState.COMPLETED, timeout=10)

    proxy.blackhole()  # the listener's path goes silent; new connections get through
    wait(lambda: proxy.connections() >= 2, timeout=15)
    assert "liveness check" in process.output()
    # The new listener is up once it answers; then a job starts within seconds.
    second_at = time.monotonic()
    second = add.enqueue(2, 2)
    wait(lambda: state(second) == JobState.COMPLETED, timeout=20)
    assert time.monotonic() - second_at < 20
    assert process.stop() == 0, process.output()


def test_a_worker_cut_off_from_the_database_exits_for_a_restart(worker_process, wait, proxy):
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "3", "DATABASE_URL": url_through(proxy)}
    process = worker_process(env=env)
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    proxy.blackhole(new_ones_too=True)
    cut_at = time.monotonic()
    assert process.wait(30) == liveness.EXIT_STALE, process.output()
    assert time.monotonic() - cut_at < 20
    assert "no heartbeat written" in process.output()


def test_a_worker_cut_off_from_the_database_stops_on_sigterm(worker_process, wait, proxy):
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "5", "DATABASE_URL": url_through(proxy)}
    process = worker_process(env=env)
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    job = Job.enqueue("tests.tasks_for_tests.blocked", args=[30])
    wait(lambda: state(job) == JobState.EXECUTING, timeout=30)
    proxy.blackhole(new_ones_too=True)
    stopped_at = time.monotonic()
    code = process.stop(signal.SIGTERM, timeout=30)
    assert code in (0, liveness.EXIT_STALE), process.output()
    assert time.monotonic() - stopped_at < 25


def test_worker_connections_are_named_and_keep_alive(worker_process, wait):
    process = worker_process(env=FAST)
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    pid = WorkerProcess.objects.get().pid

    def names() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            )
            return {row[0] for row in cursor.fetchall()}

    wait(lambda: any(n.endswith(f":{pid} listen") for n in names()), timeout=10)
    assert any(n.startswith("pgjobs worker ") and n.endswith(f":{pid}") for n in names())
    assert process.stop() == 0, process.output()


def test_a_listen_that_hears_nothing_is_reported_at_start(worker_process, wait):
    # LISTEN on another database of the same server: like PgBouncer in transaction
    # mode, it never hears what is sent through the jobs database.
    url = conftest.test_database_env()["DATABASE_URL"]
    elsewhere = url.rsplit("/", 1)[0] + "/postgres"
    process = worker_process(env={**FAST, "LISTEN_DATABASE_URL": elsewhere})
    wait(lambda: "LISTEN_DATABASE" in process.output(), timeout=30)
    assert "did not hear a notification" in process.output()
    # It still works, by polling.
    job = add.enqueue(1, 2)
    wait(lambda: state(job) == JobState.COMPLETED, timeout=15)
    assert process.stop() == 0, process.output()


def test_a_listen_that_hears_is_not_reported(worker_process, wait):
    process = worker_process(env={**FAST, "PGJOBS_LOG_LEVEL": "DEBUG"})
    wait(lambda: "LISTEN heard its probe" in process.output(), timeout=30)
    assert "did not hear" not in process.output()
    assert process.stop() == 0, process.output()
