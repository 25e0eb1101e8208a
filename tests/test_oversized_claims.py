"""Job rows whose JSON is larger than anything enqueue writes (written by SQL, or before
``MAX_PAYLOAD_BYTES`` was lowered): a claim loads no value over twice the limit as
stored; a job without its args, kwargs or meta is discarded unrun, saying why, and the
rest of its batch runs; one without its errors or result runs (loaded.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import db, loaded, maintenance
from django_pgjobs.models import Job, Queue
from django_pgjobs.worker import Worker
from tests.factories import JobFactory, WorkerProcessFactory
from tests.test_hardening_rows import a_burst_discards_it_and_runs_the_rest, insert_job, sql

pytestmark = pytest.mark.django_db

#: The limit the tests set: a claim loads up to twice this, 200,000 bytes, of a value.
PAYLOAD = 100_000


def incompressible(items: int, kind: str = "array") -> str:
    """SQL for a JSON value of ``items`` md5 strings, about 40 bytes each as stored:
    hex digits PostgreSQL can't compress, so it is stored as large as it reads."""
    if kind == "array":
        return f"(SELECT jsonb_agg(md5(i::text)) FROM generate_series(1, {items}) AS i)"
    return f"(SELECT jsonb_object_agg(i::text, md5(i::text)) FROM generate_series(1, {items}) AS i)"


#: Each JSON column a job needs to run, over the limit.
OVER = {
    "args": incompressible(10_000),
    "kwargs": incompressible(10_000, "object"),
    "meta": incompressible(10_000, "object"),
}

#: How each claim statement is reached: the queue's row.
PATHS = {
    "claim": {},
    "claim_limited": {"concurrency": 5},
    "rated (claim_limited)": {"rate_limit": 100, "rate_period": 60},
    "claim_keyed": {"key_concurrency": 2},
    "claim_blocking": {"blocking": True},
}


@pytest.fixture(autouse=True)
def small_limit(settings) -> None:
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": PAYLOAD}


def stored_size(job_id: int, column: str) -> int:
    return sql(f"SELECT pg_column_size({column}) FROM pgjobs_job WHERE id = %s", [job_id])[0][0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("column", OVER)
def test_a_job_too_large_to_load_is_discarded_saying_why_and_its_batch_runs(column, path):
    Queue.objects.create(name="q", **PATHS[path])
    before = JobFactory(queue="q")
    odd = insert_job(queue="'q'", **{column: OVER[column]})
    after = JobFactory(queue="q")
    size = stored_size(odd, column)
    assert size > 2 * PAYLOAD
    assert Worker(["q"], concurrency=10).drain() == {"completed": 2, "discarded": 1}
    assert set(
        Job.objects.filter(pk__in=[before.pk, after.pk]).values_list("state", flat=True)
    ) == {"completed"}
    state, error, kept = sql(
        f"SELECT state, errors -> -1 ->> 'error', pg_column_size({column}) "
        "FROM pgjobs_job WHERE id = %s",
        [odd],
    )[0]
    assert state == "discarded"
    assert error.startswith(f"UnrunnableJob: job {odd} can't run as stored: "), error
    assert (
        f"{column}: its JSON is {size:,} bytes stored, over the 200,000 a worker loads "
        "(twice PGJOBS['MAX_PAYLOAD_BYTES']); not loaded"
    ) in error
    assert kept == size  # the row keeps its value, to be fixed and retried
    assert not Job.objects.filter(state="executing").exists()


def test_a_claim_sends_no_value_over_the_limit(worker):
    odd = insert_job(args=OVER["args"])
    plain = JobFactory()
    claimed = {job.pk: job for job in worker.claim(10)}
    assert claimed[odd].args is None
    assert claimed[odd].oversized[0] == stored_size(odd, "args")
    assert "args: its JSON is" in claimed[odd].unreadable
    assert claimed[plain.pk].args == plain.args and claimed[plain.pk].oversized is None
    # Every field of the job comes with the claim: none is loaded later, whole.
    assert claimed[plain.pk].get_deferred_fields() == set()
    assert claimed[odd].get_deferred_fields() == set()


def test_a_value_within_the_limit_is_loaded_whole_when_its_job_runs(worker):
    text = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 6000) AS i)"
    job_id = insert_job(args=f"jsonb_build_array({text})")
    assert 6000 * 32 < stored_size(job_id, "args") <= 2 * PAYLOAD
    (job,) = worker.claim(10)
    assert job.args is None and job.deferred == ("args",)  # not with its claim
    assert loaded.load_deferred(job) and len(job.args[0]) == 6000 * 32
    assert not getattr(job, "unreadable", None)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (
            "errors",
            "(SELECT jsonb_agg(jsonb_build_object('error', md5(i::text) || "
            "(SELECT string_agg(md5((i * j)::text), '') FROM generate_series(1, 1000) AS j))) "
            "FROM generate_series(1, 10) AS i)",
        ),
        ("result", incompressible(10_000)),
    ],
)
def test_a_job_whose_errors_or_result_are_too_large_runs(worker, caplog, column, value):
    job_id = insert_job(state="'retryable'", attempt="1", **{column: value})
    size = stored_size(job_id, column)
    assert size > 2 * PAYLOAD
    assert worker.drain() == {"completed": 1}
    assert Job.objects.get(pk=job_id).result == 3
    assert f"job {job_id}: {column}: its JSON is {size:,} bytes stored" in caplog.text


def test_a_failed_attempt_of_a_job_whose_errors_are_too_large_is_written_and_logged(
    worker, caplog, monkeypatch
):
    errors = (
        "(SELECT jsonb_agg(jsonb_build_object('error', "
        "(SELECT string_agg(md5((i * j)::text), '') FROM generate_series(1, 1000) AS j))) "
        "FROM generate_series(1, 10) AS i)"
    )
    job_id = insert_job(args="'[1]'", max_attempts="1", errors=errors)  # add(1): TypeError
    sent_back = []
    fetch_dicts = db.fetch_dicts

    def spy(name, *args, **kwargs):
        rows = fetch_dicts(name, *args, **kwargs)
        sent_back.extend(row["errors"] for row in rows if name == "finish")
        return rows

    monkeypatch.setattr(db, "fetch_dicts", spy)
    assert worker.drain() == {"discarded": 1}
    assert sent_back == [None]  # the outcome write sends no such errors back
    count, last = sql(
        "SELECT jsonb_array_length(errors), errors -> -1 ->> 'error' FROM pgjobs_job WHERE id = %s",
        [job_id],
    )[0]
    assert count == 11 and last.startswith("ArgumentMismatch"), last
    assert f"job {job_id} (testproject.demo.tasks.add) discarded after attempt 1: {last}" in (
        caplog.text
    )


@pytest.fixture
def returned(monkeypatch) -> list[Job]:
    """The jobs ``db.fetch_jobs`` returns (a spy: the statements run as ever)."""
    jobs: list[Job] = []
    fetch_jobs = db.fetch_jobs

    def spy(*args, **kwargs):
        jobs.extend(fetch_jobs(*args, **kwargs))
        return jobs

    monkeypatch.setattr(db, "fetch_jobs", spy)
    return jobs


@pytest.mark.parametrize("column", ["args", "errors"])
def test_a_rescue_loads_no_value_over_the_limit(returned, caplog, column):
    """The worker that held it died (out of memory on it, in an older version): the
    worker that rescues it must not load it whole in its turn."""
    now = timezone.now()
    dead = WorkerProcessFactory(heartbeat_at=now - timedelta(minutes=5))
    job = JobFactory(executing=True, worker=dead)
    value = OVER["args"] if column == "args" else f"jsonb_build_array({OVER['args']})"
    sql(f"UPDATE pgjobs_job SET {column} = {value} WHERE id = %s", [job.pk])
    assert maintenance.rescue_orphaned(now, stale_after=60) == 1
    (rescued,) = returned
    assert getattr(rescued, column) in (None, []) and rescued.oversized is not None
    assert Job.objects.get(pk=job.pk).state == "available"
    if column == "errors":
        assert f"job {job.pk}: errors: its JSON is" in caplog.text
        assert "its errors are too large to load" in caplog.text


def test_a_reclaim_loads_no_value_over_the_limit(returned):
    now = timezone.now()
    live = WorkerProcessFactory(heartbeat_at=now)
    job = JobFactory(executing=True, worker=live, attempted_at=now - timedelta(minutes=5))
    sql(f"UPDATE pgjobs_job SET args = {OVER['args']} WHERE id = %s", [job.pk])
    assert maintenance.reclaim_forgotten(live.pk, [], now - timedelta(minutes=1), now) == 1
    (reclaimed,) = returned
    assert reclaimed.args is None and reclaimed.oversized is not None
    assert Job.objects.get(pk=job.pk).state == "available"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_survives_a_job_too_large_to_load(settings):
    """A real ``runworker --burst`` at the default limit (2,000,000 bytes loaded): a job
    of about 3.6 MB of args is discarded, the others complete, the worker exits 0."""
    settings.PGJOBS = {k: v for k, v in settings.PGJOBS.items() if k != "MAX_PAYLOAD_BYTES"}
    try:
        odd = insert_job(args=incompressible(90_000))
        process = a_burst_discards_it_and_runs_the_rest(odd)
        (error,) = sql("SELECT errors -> -1 ->> 'error' FROM pgjobs_job WHERE id = %s", [odd])[0]
        assert "over the 2,000,000 a worker loads" in error, error
        assert f"job {odd} (testproject.demo.tasks.add) discarded" in process.output()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM pgjobs_job")
