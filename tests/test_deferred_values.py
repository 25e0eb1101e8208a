"""Claimed jobs hold no large values while they wait: a claim sends a job's args, kwargs,
errors and result only up to ``loaded.INLINE_BYTES`` as stored; larger ones (within the
limit) are read by the job's thread when it runs, fenced by the claim's lease (loaded.py).
"""

from __future__ import annotations

import re
import sys

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_pgjobs import db, execution, loaded, signals
from django_pgjobs.models import Job
from django_pgjobs.worker import Worker
from testproject.demo.models import Run
from tests.conftest import WorkerProcess
from tests.test_hardening_rows import insert_job, sql

pytestmark = pytest.mark.django_db

TOTAL = "testproject.demo.tasks.total"
RECORD = "testproject.demo.tasks.record"


def random_ints(count: int) -> str:
    """SQL for args ``[[count random integers]]``: about 16 bytes each as stored, which
    PostgreSQL can't compress much."""
    return (
        "(SELECT jsonb_build_array(jsonb_agg((random() * 1e9)::int)) "
        f"FROM generate_series(1, {count}))"
    )


def sum_of_args(job_id: int) -> int:
    query = "SELECT sum(value::bigint) FROM pgjobs_job, jsonb_array_elements(args -> 0) AS value"
    return sql(query + " WHERE id = %s", [job_id])[0][0]


def loads_of(queries: CaptureQueriesContext) -> list[str]:
    """The deferred loads among ``queries``: reads of a job's JSON by id and lease."""
    return [
        query["sql"]
        for query in queries.captured_queries
        if re.match(r'SELECT "pgjobs_job"\."(args|kwargs|errors|result)"', query["sql"])
        and '"pgjobs_job"."lease" =' in query["sql"]
    ]


def test_a_job_of_1_mb_of_args_runs_with_them_whole_read_when_it_runs(worker):
    job_id = insert_job(task=f"'{TOTAL}'", args=random_ints(93_000))
    assert (
        sql("SELECT octet_length(args::text) FROM pgjobs_job WHERE id = %s", [job_id])[0][0] > 10**6
    )
    (claimed,) = worker.claim(10)
    assert claimed.args is None and claimed.deferred == ("args",)  # not sent by the claim
    seen = []

    def started(sender: object, job: Job, **kwargs: object) -> None:
        seen.append(len(job.args[0]))  # what receivers (and middleware, the task) see

    signals.job_started.connect(started)
    try:
        with CaptureQueriesContext(connection) as queries:
            assert execution.execute(claimed) == "completed"
    finally:
        signals.job_started.disconnect(started)
    assert seen == [93_000]
    assert len(loads_of(queries)) == 1
    assert Job.objects.get(pk=job_id).result == sum_of_args(job_id)


def test_a_run_job_lets_go_of_its_large_values_and_a_receiver_still_reads_them(worker):
    """Its outcome may wait for the completer (a busy worker holds up to concurrency +
    prefetch of them): held with it, 150 jobs of 900 KB args took 390 MB. A
    ``job_completed`` receiver that reads them has them read again."""
    job_id = insert_job(task=f"'{TOTAL}'", args=random_ints(2_000))  # ~32 KB
    seen = []

    def completed(sender: object, job: Job, **kwargs: object) -> None:
        seen.append(("args" in job.__dict__, len(job.args[0])))

    signals.job_completed.connect(completed)
    try:
        assert worker.drain() == {"completed": 1}
    finally:
        signals.job_completed.disconnect(completed)
    assert seen == [(False, 2_000)]
    assert Job.objects.get(pk=job_id).result == sum_of_args(job_id)


def test_small_jobs_cost_no_query_more(worker):
    small = [insert_job(task=f"'{TOTAL}'", args="'[[1, 2, 3]]'") for _ in range(3)]
    large = insert_job(task=f"'{TOTAL}'", args=random_ints(2_000))  # ~32 KB
    with CaptureQueriesContext(connection) as queries:
        assert worker.drain() == {"completed": 4}
    assert len(loads_of(queries)) == 1  # the large job's, and none of the small ones'
    results = dict(Job.objects.values_list("pk", "result"))
    assert [results[pk] for pk in small] == [6] * 3
    assert results[large] == sum_of_args(large)


def test_a_job_taken_away_before_it_runs_is_not_run_and_nothing_is_written(worker):
    job_id = insert_job(task=f"'{RECORD}'", args=f"(SELECT jsonb_build_array({_hex(40_000)}))")
    (claimed,) = worker.claim(10)
    assert claimed.deferred == ("args",)
    # Rescued and claimed again by another worker meanwhile: a new lease.
    sql("UPDATE pgjobs_job SET lease = gen_random_uuid(), worker_id = NULL WHERE id = %s", [job_id])
    before = sql(
        "SELECT state, lease, errors, result, attempt FROM pgjobs_job WHERE id = %s", [job_id]
    )
    assert execution.execute(claimed) == "lost"
    assert not Run.objects.exists()  # the task never ran
    after = sql(
        "SELECT state, lease, errors, result, attempt FROM pgjobs_job WHERE id = %s", [job_id]
    )
    assert after == before


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_values_cant_be_read_for_an_outage_is_retried_as_a_failed_attempt():
    job_id = insert_job(task=f"'{TOTAL}'", args=random_ints(2_000))
    (claimed,) = Worker(["default"]).claim(10)
    assert claimed.deferred == ("args",)
    pid = connection.connection.info.backend_pid
    with psycopg.connect(**db.connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert execution.execute(claimed) == "retryable"
    state, error = sql(
        "SELECT state, errors -> -1 ->> 'error' FROM pgjobs_job WHERE id = %s", [job_id]
    )[0]
    assert state == "retryable" and "OperationalError" in error, error


def test_the_inline_threshold_is_within_the_limit_however_low_the_limit(settings):
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": 1_000}
    assert loaded.inline(loaded.limit()) == 2_000
    assert loaded.inline(10**9) == loaded.INLINE_BYTES


def _hex(characters: int) -> str:
    """SQL for a string of ``characters`` hex digits PostgreSQL can't compress much."""
    md5s = characters // 32
    return f"(SELECT string_agg(md5(i::text), '') FROM generate_series(1, {md5s}) AS i)"


#: Prints the largest resident set of the process it runs (and its children), in KB.
PEAK = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak rss kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(code)"
)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_holding_1000_prefetched_jobs_of_large_args_stays_small():
    """``runworker --burst --prefetch 1000`` over 150 jobs of ~900 KB args each: the
    claim used to load them all (855 MB of RSS for 300 such jobs); now each is read by
    the thread that runs it. Generous bound: about what 50 such jobs held before."""
    try:
        sql(
            "INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,"
            " max_attempts, run_at, created_at, errors, pending_dependencies, meta)"
            f" SELECT '{TOTAL}', 'default', {random_ints(56_000)}, '{{}}', 'available', 0, 0,"
            " 3, now() - interval '1 second', now(), '[]', 0, '{}'"
            " FROM generate_series(1, 150)"
        )
        process = WorkerProcess(
            "--burst",
            "--queues",
            "default",
            "--prefetch",
            "1000",
            prefix=(sys.executable, "-c", PEAK),
        )
        assert process.wait(300) == 0, process.output()
        peak = int(re.search(r"peak rss kb (\d+)", process.output()).group(1))
        states = sql("SELECT state, count(*) FROM pgjobs_job GROUP BY state")
        assert states == [("completed", 150)], process.output()
        print(f"peak RSS {peak:,} KB")
        assert peak < 250_000, f"peak RSS {peak:,} KB"
    finally:
        sql("DELETE FROM pgjobs_job")
