"""Prometheus metrics: gauges from the database, counters from the middleware, and the
endpoints of the web view and of ``runworker --metrics-port``, read with the real parser."""

from __future__ import annotations

import logging
import signal
import socket
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from django_pgjobs import maintenance
from django_pgjobs.metrics import DatabaseCollector, exposition
from django_pgjobs.models import Job, Queue, Schedule, WorkerProcess
from django_pgjobs.states import JobState
from testproject.demo.tasks import add, always_fails, sleep
from tests.conftest import wait_until
from tests.factories import JobFactory, ScheduleFactory, WorkerProcessFactory

S = JobState
METRICS = "django_pgjobs.metrics.PrometheusMiddleware"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(name, sorted labels): value} of an exposition, parsed by prometheus_client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def with_metrics(settings):
    settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": [METRICS]}


# -- gauges read from the database ---------------------------------------------------------


@pytest.mark.django_db
def test_the_gauges_say_depth_per_state_oldest_due_job_workers_and_schedules():
    now = timezone.now()
    JobFactory(queue="mail", run_at=now - timedelta(minutes=2))
    JobFactory(queue="mail", executing=True)
    JobFactory(queue="default", completed=True)
    Queue.objects.filter(name="serial").update(paused=True)
    WorkerProcessFactory(heartbeat_at=now)
    WorkerProcessFactory(heartbeat_at=now - timedelta(hours=1))
    late = ScheduleFactory(name="nightly")
    Schedule.objects.filter(pk=late.pk).update(
        next_fire_at=now - timedelta(seconds=30), last_fire_at=now - timedelta(days=1)
    )

    parsed = samples(exposition()[0].decode())

    assert value(parsed, "pgjobs_database_up") == 1
    assert value(parsed, "pgjobs_queue_jobs", queue="mail", state="available") == 1
    assert value(parsed, "pgjobs_queue_jobs", queue="mail", state="executing") == 1
    assert value(parsed, "pgjobs_queue_jobs", queue="default", state="available") == 0
    assert 110 < value(parsed, "pgjobs_queue_oldest_due_age_seconds", queue="mail") < 200
    assert value(parsed, "pgjobs_queue_oldest_due_age_seconds", queue="default") == 0
    assert value(parsed, "pgjobs_queue_paused", queue="serial") == 1
    assert value(parsed, "pgjobs_worker_processes", status="alive") == 1
    assert value(parsed, "pgjobs_worker_processes", status="stale") == 1
    assert 25 < value(parsed, "pgjobs_schedule_lag_seconds", schedule="nightly") < 100
    last_fire = value(parsed, "pgjobs_schedule_last_fire_timestamp_seconds", schedule="nightly")
    assert abs(last_fire - (now - timedelta(days=1)).timestamp()) < 1


@pytest.mark.django_db
def test_a_database_that_fails_is_a_gauge_not_a_failed_scrape(monkeypatch):
    from django.db import OperationalError

    def unavailable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("django_pgjobs.stats.depth_counts", unavailable)
    parsed = samples(exposition()[0].decode())
    assert value(parsed, "pgjobs_database_up") == 0


@pytest.mark.django_db
def test_the_web_view_serves_text_and_openmetrics(client):
    JobFactory(queue="mail")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    parsed = samples(response.content.decode())
    assert value(parsed, "pgjobs_queue_jobs", queue="mail", state="available") == 1
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    body = response.content.decode()
    assert body.count("# EOF") == 1 and body.endswith("# EOF\n")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "accept",
    ["application/openmetrics-text;version=abc", "application/openmetrics-text; version=1.x"],
)
def test_an_openmetrics_version_that_is_no_number_gets_the_text_format(client, accept):
    """prometheus_client's choose_encoder compared the version's parts, text, with
    numbers: TypeError, a 500 from the web view (and from a worker's --metrics-port,
    which logged an exception at each scrape)."""
    response = client.get("/metrics", HTTP_ACCEPT=accept)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert "pgjobs_queue_jobs" in response.content.decode()


# -- counters and durations: the middleware ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_jobs_are_counted_as_enqueued_once_committed(with_metrics):
    labels = {"queue": "default", "task": add.name}
    before = counted("pgjobs_jobs_enqueued_total", **labels)
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(1, 1)
        raise RuntimeError("rolled back")
    assert counted("pgjobs_jobs_enqueued_total", **labels) == before
    with transaction.atomic():
        Job.enqueue_many([{"task": add.name, "args": [n, n]} for n in range(3)])
        assert counted("pgjobs_jobs_enqueued_total", **labels) == before
    assert counted("pgjobs_jobs_enqueued_total", **labels) == before + 3


@pytest.mark.django_db
def test_attempts_are_counted_by_outcome_and_timed(with_metrics, worker):
    ok = {"queue": "default", "task": add.name}
    bad = {"queue": "default", "task": always_fails.name}
    before = {
        "completed": counted("pgjobs_jobs_completed_total", **ok),
        "failed": counted("pgjobs_jobs_failed_total", **bad),
        "discarded": counted("pgjobs_jobs_discarded_total", **bad),
        "timed": counted("pgjobs_job_duration_seconds_count", **ok, outcome="completed"),
    }
    add.enqueue(1, 2)
    add.enqueue(3, 4)
    always_fails.using(max_attempts=1).enqueue()
    always_fails.enqueue()
    worker.drain()
    assert counted("pgjobs_jobs_completed_total", **ok) == before["completed"] + 2
    assert counted("pgjobs_jobs_failed_total", **bad) == before["failed"] + 2
    assert counted("pgjobs_jobs_discarded_total", **bad) == before["discarded"] + 1
    timed = counted("pgjobs_job_duration_seconds_count", **ok, outcome="completed")
    assert timed == before["timed"] + 2


@pytest.mark.django_db
def test_jobs_rescued_from_a_dead_worker_are_counted(with_metrics):
    from django_pgjobs import middleware

    middleware.chain()  # a worker loads it at start
    labels = {"queue": "default", "task": add.name}
    before = counted("pgjobs_jobs_rescued_total", **labels)
    dead = WorkerProcessFactory(heartbeat_at=timezone.now() - timedelta(hours=1))
    JobFactory(executing=True, worker=dead, task=add.name)
    assert maintenance.rescue_orphaned(timezone.now()) == 1
    assert counted("pgjobs_jobs_rescued_total", **labels) == before + 1


# -- runworker --metrics-port ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def start_with_port(worker_process, *args: str, env: dict | None = None):
    port = free_port()
    process = worker_process(
        "--metrics-port", str(port), "--metrics-address", "127.0.0.1", *args, env=env
    )
    wait_until(lambda: fetch(port, "/readyz")[0] == 200, timeout=30)
    return process, port


@pytest.mark.slow
def test_a_worker_process_serves_its_counters_the_gauges_and_probes(worker_process):
    process, port = start_with_port(worker_process, "--concurrency", "2")
    for n in range(5):
        add.enqueue(n, n)
    always_fails.using(max_attempts=1).enqueue()
    wait_until(lambda: not Job.objects.exclude(state__in=[S.COMPLETED, S.DISCARDED]).exists())

    def scraped() -> dict:
        return samples(fetch(port, "/metrics")[1])

    ok = {"queue": "default", "task": add.name}
    parsed = wait_until(
        lambda: (p := scraped()) and value(p, "pgjobs_jobs_completed_total", **ok) == 5 and p
    )
    failed = {"queue": "default", "task": always_fails.name}
    assert value(parsed, "pgjobs_jobs_discarded_total", **failed) == 1
    assert value(parsed, "pgjobs_job_duration_seconds_count", **ok, outcome="completed") == 5
    assert value(parsed, "pgjobs_worker_processes", status="alive") == 1
    assert value(parsed, "pgjobs_queue_jobs", queue="default", state="available") == 0
    assert fetch(port, "/livez") == (200, "live\n")
    assert fetch(port, "/nope")[0] == 404
    assert process.stop() == 0


@pytest.mark.slow
def test_several_processes_share_one_port_their_counters_add_up(worker_process):
    process, port = start_with_port(
        worker_process,
        "--processes", "2", "--concurrency", "1", "--prefetch", "0",
        env={"PGJOBS_HEARTBEAT_INTERVAL": "0.5", "PGJOBS_WORKER_STALE_AFTER": "3"},
    )  # fmt: skip
    wait_until(lambda: WorkerProcess.objects.count() == 2, timeout=30)
    # One job at a time each, 0.1 s a job: one process can't take them all (with
    # quick jobs and prefetch, one could, and the sum would prove nothing).
    Job.enqueue_many([{"task": sleep.name, "args": [0.1]} for _ in range(20)])
    wait_until(lambda: not Job.objects.exclude(state=S.COMPLETED).exists(), timeout=60)
    ok = {"queue": "default", "task": sleep.name}
    assert wait_until(
        lambda: (
            value(samples(fetch(port, "/metrics")[1]), "pgjobs_jobs_completed_total", **ok) == 20
        )
    )
    assert len(set(Job.objects.values_list("worker_id", flat=True))) == 2  # both ran jobs

    # A frozen worker process stops heartbeating: the parent answers for it.
    frozen = WorkerProcess.objects.order_by("pk").first().pid
    import os

    os.kill(frozen, signal.SIGSTOP)
    try:
        _, text = wait_until(lambda: (r := fetch(port, "/livez"))[0] == 503 and r, timeout=30)
        assert f"pid {frozen}" in text and "no heartbeat" in text
    finally:
        os.kill(frozen, signal.SIGCONT)
    wait_until(lambda: fetch(port, "/livez")[0] == 200, timeout=30)
    assert process.stop() == 0


def test_metrics_port_needs_the_client_and_a_free_port(monkeypatch):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"--metrics-port {port}"):
            call_command("runworker", "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    with pytest.raises(CommandError, match="from 0 to 65535"):
        call_command("runworker", "--metrics-port", "70000")
    import builtins

    real_import = builtins.__import__

    def without_client(name, *args, **kwargs):
        if name.startswith("prometheus_client"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_client)
    with pytest.raises(CommandError, match=r"pip install \"prometheus-client>=0\.20\""):
        call_command("runworker", "--metrics-port", "0")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "address, problem",
    [
        ("127.0.0.1\x00", "contains a NUL character"),
        # What argv holds for bytes that are no UTF-8 (--metrics-address $'\xff').
        ("\udcff", "contains a lone surrogate"),
    ],
)
def test_a_metrics_address_no_socket_can_bind_to_is_refused_saying_so(address, problem):
    """It was the socket's TypeError ("encoding of hostname failed"), in a traceback."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=f"^--metrics-address {problem}"):
        call_command("runworker", "--metrics-port", "0", "--metrics-address", address)
    assert not WorkerProcess.objects.exists()


def test_collecting_for_registration_asks_the_database_nothing():
    assert DatabaseCollector().describe() == []


@pytest.mark.django_db(transaction=True)
def test_counters_that_raise_change_no_job_and_no_enqueue(
    with_metrics, worker, monkeypatch, caplog
):
    # A counter's write can fail (a full PROMETHEUS_MULTIPROC_DIR): raised in the job's
    # execute hook, a completed job's result was lost and it ran again, a failed one's
    # error became the counter's; raised on commit, a committed enqueue raised.
    from prometheus_client.metrics import Counter, Histogram

    from django_pgjobs import metrics

    monkeypatch.setattr(metrics, "_failure_said", False, raising=False)
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.metrics")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Counter, "inc", full)
    monkeypatch.setattr(Histogram, "observe", full)
    with transaction.atomic():
        ok = add.enqueue(1, 2)
    bad = always_fails.using(max_attempts=1).enqueue("its own error")
    assert worker.drain() == {S.COMPLETED: 1, S.DISCARDED: 1}
    ok.refresh_from_db()
    bad.refresh_from_db()
    assert (ok.state, ok.result, ok.attempt) == (S.COMPLETED, 3, 1)
    assert bad.errors[0]["error"] == "ValueError: its own error"
    said = [r for r in caplog.records if "metrics" in r.getMessage() and r.levelname == "ERROR"]
    assert len(said) == 1 and said[0].exc_info, [r.getMessage() for r in caplog.records]
    # Said once; each counting after it, at debug level, naming what went uncounted.
    counted = [r.getMessage() for r in caplog.records if r.name == "django_pgjobs.metrics"]
    assert counted == [
        "metrics: counting jobs enqueued failed; jobs run on uncounted (said once per process)",
        "metrics: counting jobs enqueued failed",
        f"metrics: counting the completed attempt of job {ok.pk} failed",
        f"metrics: counting the failed attempt of job {bad.pk} failed",
    ]
