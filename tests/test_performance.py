"""What the fast paths must keep: batched outcomes, statement triggers, plans, storage."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import Job, db, events, maintenance, transitions
from django_pgjobs.models import JobDependency
from django_pgjobs.states import JobState
from testproject.demo.tasks import add
from tests.factories import JobFactory, finished_jobs_analyzed

pytestmark = pytest.mark.django_db

S = JobState


def plan(statement: str, params: dict) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + db.statement(statement), params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_outcomes_are_written_in_one_statement_each_checked_against_its_lease(
    django_assert_num_queries,
):
    jobs = [Job.objects.get(pk=JobFactory(executing=True).pk) for _ in range(3)]
    stale = Job.objects.get(pk=jobs[1].pk)
    stale.lease = None  # as if rescued and claimed again by someone else
    now = timezone.now()
    outcomes = [
        transitions.completed(jobs[0], {"n": 1}, now),
        transitions.completed(stale, 2, now),
        transitions.failed(jobs[2], ValueError("no"), now, discard=True),
    ]
    # One UPDATE, one read-back of the refused job, one publish of the events.
    with django_assert_num_queries(3):
        assert transitions.finish(outcomes) == [True, False, True]
    first, second, third = (Job.objects.get(pk=job.pk) for job in jobs)
    assert (first.state, first.result, first.lease) == (S.COMPLETED, {"n": 1}, None)
    assert second.state == S.EXECUTING and second.result is None
    assert third.state == S.DISCARDED and third.errors[-1]["error"] == "ValueError: no"
    assert jobs[0].state == S.COMPLETED and jobs[0].finished_at == now  # from RETURNING


def test_a_batch_finishing_two_dependencies_of_one_job_releases_it_once():
    first, second = (Job.objects.get(pk=JobFactory(executing=True).pk) for _ in range(2))
    joined = Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[first, second])
    transitions.finish([transitions.completed(first, 1), transitions.completed(second, 2)])
    joined.refresh_from_db()
    assert joined.state == S.AVAILABLE and joined.pending_dependencies == 0


def test_the_state_machine_still_refuses_bad_moves_of_many_jobs_at_once():
    from django.db import IntegrityError, transaction

    done = [JobFactory(completed=True) for _ in range(3)]
    bad_move = pytest.raises(IntegrityError, match="cannot go from completed to executing")
    with bad_move, transaction.atomic():
        Job.objects.filter(pk__in=[job.pk for job in done]).update(
            state="executing", lease="00000000-0000-0000-0000-000000000001"
        )
    assert set(Job.objects.values_list("state", flat=True)) == {S.COMPLETED}


@pytest.mark.django_db(transaction=True)
def test_worker_events_are_published_once_and_released_dependents_still_are(worker):
    with events.listen() as stream:
        parent = add.enqueue(1, 1)
        child = Job.enqueue("testproject.demo.tasks.add", [2, 2], depends_on=[parent])
        worker.drain()
        seen = [(e.job_id, e.previous, e.state) for e in stream.iter(timeout=1)]
    assert seen.count((parent.pk, "available", "executing")) == 1
    assert seen.count((parent.pk, "executing", "completed")) == 1
    # Released by the trigger inside the worker's outcome statement:
    assert seen.count((child.pk, "waiting", "available")) == 1
    assert seen.count((child.pk, "executing", "completed")) == 1


def test_the_outcome_statement_reads_only_its_own_jobs_by_primary_key():
    # A table that has seen work, analysed (the plan of an empty one means nothing):
    # the planner must probe the primary key per outcome, neither read the whole
    # table nor every executing job (the partial index it took before: a busy
    # drain's thousand executing jobs read to write a few dozen outcomes).
    JobFactory.create_batch(2000, completed=True)
    JobFactory.create_batch(200, executing=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
        outcome = {"lease": None, "state": "completed", "result": None, "error": None}
        rows = [{**outcome, "id": n} for n in range(1, 21)]
        params = {"outcomes": db.as_json(rows), "most": 2_000_000}
        cursor.execute("EXPLAIN " + db.statement("finish"), params)
        found = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on pgjobs_job" not in found, found
    assert "pgjobs_job_executing" not in found and "pgjobs_job_pkey" in found, found


def test_the_generic_plans_of_prepared_statements_read_jobs_through_an_index():
    # Workers prepare these (db.PREPARABLE); PostgreSQL may then plan them once
    # for any parameters, without seeing the batch.
    JobFactory.create_batch(2000, completed=True)
    JobFactory.create_batch(50, executing=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for name in sorted(db.PREPARABLE):
            text = db.statement(name)
            params = sorted(set(re.findall(r"%\((\w+)\)s", text)))
            for number, param in enumerate(params, 1):
                text = text.replace(f"%({param})s", f"${number}")
            cursor.execute(f"PREPARE generic_{name} AS {text}")
            nulls = ", ".join(["NULL"] * len(params))
            cursor.execute(
                f"EXPLAIN EXECUTE generic_{name}({nulls})"
                if params
                else f"EXPLAIN EXECUTE generic_{name}"
            )
            found = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on pgjobs_job" not in found, f"{name}:\n{found}"


def test_limited_claims_use_the_claim_index():
    params = {"queue": "mail", "limit": 10, "now": timezone.now(), "worker_id": None}
    params["most"], params["inline"] = 2_000_000, 8192
    params["states"] = ["available", "retryable", "scheduled"]
    limited = {**params, "concurrency": 2, "started_at": params["now"]}
    assert "pgjobs_job_claim" in plan("claim_limited", limited)


def explained(queryset) -> str:
    """The plan of ``queryset`` where the table could only be read whole as a last resort."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    return queryset.explain()


@pytest.mark.parametrize("state", list(JobState))
def test_each_state_is_counted_from_an_index_without_reading_the_table(state):
    """The admin's state tabs count up to a cap; each state has an index to count from
    (on a table of millions, a state without one would be a read of all of it)."""
    from django_pgjobs import stats

    found = explained(Job.objects.filter(state=state).order_by()[: stats.COUNT_CAP + 1])
    # The primary key would do too, reading every job: an index of the state's own.
    used = re.findall(r"Index.* (?:on|using) (pgjobs_job_\w+)", found)
    assert "Seq Scan" not in found and used and "pgjobs_job_pkey" not in used, found


def test_queue_depths_are_counted_from_indexes():
    from django_pgjobs import stats

    found = explained(stats.depth_counts())
    used = re.findall(r"Index.* (?:on|using) (pgjobs_job_\w+)", found)
    assert "Seq Scan" not in found and "pgjobs_job_pkey" not in used, found
    assert len(used) == len(stats.DEPTH_INDEXES), found
    counted = [state for states in stats.DEPTH_INDEXES for state in states]
    assert sorted(counted) == sorted(stats.DEPTH_STATES)


def test_the_job_table_leaves_room_for_updates_in_place():
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_job'")
        options = cursor.fetchone()[0]
    assert "fillfactor=70" in options


def test_enqueue_many_returns_saved_jobs_in_order_with_every_field():
    when = timezone.now()
    jobs = Job.enqueue_many(
        [
            {"task": "testproject.demo.tasks.add", "args": [n, n], "priority": n, "run_at": when}
            for n in range(5)
        ]
    )
    assert [job.pk for job in jobs] == sorted(job.pk for job in jobs)
    for n, job in enumerate(jobs):
        stored = Job.objects.get(pk=job.pk)
        assert (stored.args, stored.priority, stored.run_at) == ([n, n], n, when)
        assert (stored.kwargs, stored.errors, stored.meta, stored.result) == ({}, [], {}, None)
        assert not job._state.adding


@pytest.mark.django_db(transaction=True)
def test_with_events_off_nothing_is_published_and_wait_still_returns(settings, worker):
    settings.PGJOBS = {**settings.PGJOBS, "EVENTS": False}
    events.switch_off_in_database(connection)  # what every new connection does
    try:
        with events.listen() as stream:
            job = add.enqueue(1, 2)
            worker.drain()
            assert list(stream.iter(timeout=0.5)) == []
        assert job.wait(timeout=5).result == 3
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET pgjobs.events")


def test_events_takes_a_bool(settings):
    from django_pgjobs.checks import check_settings

    settings.PGJOBS = {"EVENTS": False}
    assert check_settings() == []
    settings.PGJOBS = {"EVENTS": "no"}
    assert [error.id for error in check_settings()] == ["pgjobs.E003"]


def test_the_one_job_insert_names_every_column_of_the_model():
    """pgjobs_insert_job (migration 0015) takes every column but id and those every new
    job starts with, which it writes itself: enqueue.py's _FRESH."""
    from django_pgjobs.enqueue import _FRESH, _function_columns
    from django_pgjobs.migrations import SQL_DIR
    from django_pgjobs.models import Job

    text = (SQL_DIR / "0015_insert_job_function.sql").read_text()
    listed = re.search(r"INSERT INTO pgjobs_job AS job \(([^)]*)\)", text).group(1)
    columns = [name.strip() for name in listed.split(",")]
    model = [f.column for f in Job._meta.concrete_fields if f.column != "id"]
    assert sorted(columns) == sorted(model) and len(columns) == len(set(columns))
    taken = list(_function_columns()[1])
    assert sorted(taken + list(_FRESH)) == sorted(model)
    declared = re.search(r"FUNCTION pgjobs_insert_job\((.*?)\) RETURNS", text, re.S).group(1)
    parameters = [item.split()[0] for item in declared.split(",")]
    assert sorted(parameters) == sorted(taken)
    assert re.findall(r"%\((\w+)\)s", db.statement("insert_job")) == parameters  # in order


@pytest.mark.parametrize("statement, skipped", [("insert_jobs", "id"), ("copy_jobs", None)])
def test_the_bulk_inserts_name_every_column_of_the_model(statement, skipped):
    from django_pgjobs.models import Job

    text = db.statement(statement)
    listed = re.search(r"(?:INSERT INTO|COPY) pgjobs_job \(([^)]*)\)", text).group(1)
    columns = [name.strip() for name in listed.split(",")]
    model = [f.column for f in Job._meta.concrete_fields if f.column != skipped]
    assert sorted(columns) == sorted(model) and len(columns) == len(set(columns))


def test_executing_jobs_are_found_by_queue_and_by_worker_through_one_index():
    # pgjobs_job_executing (queue, worker_id) serves both: limited claims count a
    # queue's executing jobs, rescue and the admin's workers look them up by worker.
    JobFactory.create_batch(2000, completed=True)
    JobFactory.create_batch(200, executing=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
    by_queue = Job.objects.filter(queue="mail", state=S.EXECUTING)
    by_worker = Job.objects.filter(worker_id=1, state=S.EXECUTING)
    for executing in (by_queue, by_worker):
        found = explained(executing)
        assert "pgjobs_job_executing" in found and "Seq Scan" not in found, found


@pytest.mark.parametrize("state", [S.DISCARDED, S.CANCELLED, S.RETRYABLE, S.SCHEDULED, S.WAITING])
def test_the_newest_jobs_of_a_rare_state_are_read_by_their_own_index(state):
    # The job list under ?state=discarded (and pgjobs list --state): the 50 newest by
    # id, not a walk back through every newer completed job (pgjobs_job_rare_by_id;
    # available, executing and completed jobs are no entry). One job in 30 of the
    # state, as in production. Retryable, scheduled and waiting ones walked it back
    # until 0029: 134 ms for 2,000 retryable jobs behind 398,000 newer ones.
    finished_jobs_analyzed("CASE WHEN n %% 30 = 0 THEN %s ELSE 'completed' END", [state.value])
    found = explained(Job.objects.filter(state=state).order_by("-id")[:50])
    assert "pgjobs_job_rare_by_id" in found and "Sort" not in found, found


def test_a_bulk_retry_or_cancel_by_task_reads_only_the_jobs_it_could_change():
    """`pgjobs retry --task X` (or cancel; the admin's actions under a task filter): no
    index serves the task, but the states a retry or a cancel changes are few among the
    completed jobs, and partial indexes hold them. The retry's were `IN (..., completed)
    AND <> completed`, the cancel's `IN (five states)`: no partial index served them,
    and each UPDATE read the whole table (the retry 280 ms at 600,000 jobs)."""
    from django_pgjobs.selection import JobFilter

    finished_jobs_analyzed("CASE WHEN n %% 30 = 0 THEN 'discarded' ELSE 'completed' END")
    failed = JobFactory(task="shop.tasks.gone", discarded=True)
    waiting = JobFactory(task="shop.tasks.gone", scheduled=True)
    jobs = JobFilter.parse(tasks=["shop.tasks.gone"]).jobs()
    before = scans("pgjobs_job", "seq_scan")

    assert transitions.retry_many(jobs) == 2  # the discarded job, and the scheduled one
    assert transitions.cancel_many(jobs.filter(pk=waiting.pk)) == 1
    assert transitions.cancel_many(jobs) == 1

    assert scans("pgjobs_job", "seq_scan") - before == 0
    states = dict(Job.objects.filter(task="shop.tasks.gone").values_list("pk", "state"))
    assert states == {failed.pk: JobState.CANCELLED, waiting.pk: JobState.CANCELLED}


def finished_jobs(count: int, days_ago: int) -> list[int]:
    """``count`` jobs completed ``days_ago`` days ago, a millisecond apart; their ids."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,
                                    max_attempts, run_at, created_at, finished_at, errors,
                                    meta, pending_dependencies)
            SELECT 'testproject.demo.tasks.add', 'default', '[]', '{}', 'completed', 0, 1, 3,
                   now(), now(), now() - make_interval(days => %s) + n * interval '1 ms',
                   '[]', '{}', 0
            FROM generate_series(1, %s) AS n
            RETURNING id
            """,
            [days_ago, count],
        )
        return [row[0] for row in cursor.fetchall()]


def scans(table: str, kind: str) -> int:
    """Scans of ``table`` of one ``kind`` (``idx_scan``, ``seq_scan``) this transaction
    has run so far."""
    if kind not in ("idx_scan", "seq_scan"):
        raise ValueError(kind)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce({kind}, 0) FROM pg_stat_xact_user_tables WHERE relname = %s",
            [table],
        )
        return cursor.fetchone()[0]


def test_prune_looks_at_each_kept_job_once_not_once_per_batch():
    # The oldest finished jobs are kept while a gather job waits for them: each batch
    # looked at all of them again (a look up of their dependents each) before it found
    # one to delete, and 100,000 jobs, half of them kept, took 19.8 s to prune against
    # 1.6 s for 25,000.
    kept = finished_jobs(500, days_ago=30)
    finished_jobs(500, days_ago=20)
    gather = JobFactory(waiting=True, pending_dependencies=1)
    JobDependency.objects.bulk_create(
        JobDependency(job=gather, depends_on_id=pk, satisfied=True) for pk in kept
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
        cursor.execute("ANALYZE pgjobs_jobdependency")
    before = scans("pgjobs_jobdependency", "idx_scan")

    assert maintenance.prune_finished(timezone.now(), timedelta(days=7), batch_size=20) == 500

    # 26 batches each looked up the dependents of the 500 kept jobs: 13,000 before.
    assert scans("pgjobs_jobdependency", "idx_scan") - before < 2_000
    assert Job.objects.filter(pk__in=kept).count() == 500


def test_prune_finds_a_batch_s_edges_through_their_indexes():
    # A finished gather job of many dependencies: as "job_id = ANY (ARRAY(SELECT ...))
    # OR depends_on_id = ANY (...)" every batch read every edge and searched both
    # arrays of the batch's ids for each (100,000 dependencies: 300 ms a batch, 38.7 s
    # to prune them all, against 2.7 s for 25,000).
    dependencies = finished_jobs(1000, days_ago=30)
    (gather,) = finished_jobs(1, days_ago=20)
    JobDependency.objects.bulk_create(
        JobDependency(job_id=gather, depends_on_id=pk, satisfied=True) for pk in dependencies
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
        cursor.execute("ANALYZE pgjobs_jobdependency")
        params = {
            "finished_before": timezone.now() - timedelta(days=7),
            "finished_from": datetime.min.replace(tzinfo=UTC),
            "batch_size": 100,
        }
        cursor.execute("EXPLAIN " + db.statement("prune"), params)
        found = "\n".join(row[0] for row in cursor.fetchall())
    assert "_id = ANY" not in found, found  # an array searched for each edge

    assert maintenance.prune_finished(timezone.now(), timedelta(days=7), batch_size=100) == 1001
    assert not JobDependency.objects.exists()


def test_prune_looks_up_dependents_by_index_when_one_job_has_most_edges():
    # ANALYZE saw one value of depends_on_id, so the planner took every finished job to
    # have all the edges, and looked for its unfinished dependents by reading the whole
    # job table, once per finished job: a job with 100,000 finished dependents took
    # 455 s to prune (25,000: 28 s). Migration 0020 says jobs have few edges.
    root, *dependents = finished_jobs(3001, days_ago=30)
    JobDependency.objects.bulk_create(
        JobDependency(job_id=pk, depends_on_id=root, satisfied=True) for pk in dependents
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
        cursor.execute("ANALYZE pgjobs_jobdependency")
    before = scans("pgjobs_job", "seq_scan")

    assert maintenance.prune_finished(timezone.now(), timedelta(days=7), batch_size=500) == 3001

    assert scans("pgjobs_job", "seq_scan") - before < 20  # one a finished job: 3,001
    assert not JobDependency.objects.exists()


def test_prune_finds_finished_jobs_without_a_finish_time_through_the_finished_index():
    # Each prune looks for finished jobs whose finished_at is NULL (written by SQL;
    # sql/prune_undated.sql): among millions of dated ones, reading them all each time
    # would cost the prune more than its batches.
    finished_jobs(20_000, days_ago=1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
        params = {"finished_before": timezone.now() - timedelta(days=7), "batch_size": 1000}
        cursor.execute("EXPLAIN " + db.statement("prune_undated"), params)
        found = "\n".join(row[0] for row in cursor.fetchall())
    assert "pgjobs_job_finished" in found and "Seq Scan on pgjobs_job job" not in found, found


def test_a_unique_for_enqueue_finds_its_window_through_an_index():
    # unique_for looks for a job of its key enqueued within the window, whatever its
    # state: finished jobs are no entry in the active keys' unique index, so without
    # pgjobs_job_unique_key_since each such enqueue read the whole table (100 ms at a
    # million jobs) while holding the key's lock.
    from django.test.utils import CaptureQueriesContext

    from tests.tasks_for_tests import once_an_hour

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,
                                    max_attempts, run_at, created_at, finished_at, errors,
                                    meta, pending_dependencies, unique_key)
            SELECT 'testproject.demo.tasks.add', 'default', '[]', '{}', 'completed', 0,
                   1, 3, now(), now(), now(), '[]', '{}', 0,
                   CASE WHEN n % 100 = 0 THEN 'key ' || n END
            FROM generate_series(1, 30000) AS n
            """
        )
        cursor.execute("ANALYZE pgjobs_job")
    with CaptureQueriesContext(connection) as queries:
        once_an_hour.enqueue("weekly")
    (window,) = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and '"created_at" >=' in q["sql"]
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + window)
        found = "\n".join(row[0] for row in cursor.fetchall())
    assert "pgjobs_job_unique_key_since" in found, found


def captured_plans(run, where: str) -> str:
    """The plans of the statements ``run()`` sent that contain ``where`` (one at least)."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        run()
    statements = [q["sql"] for q in queries.captured_queries if where in q["sql"]]
    assert statements, queries.captured_queries
    with connection.cursor() as cursor:
        plans = []
        for statement in statements:
            cursor.execute("EXPLAIN " + statement)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return "\n\n".join(plans)


def test_deleting_jobs_finds_their_edges_through_the_edge_indexes():
    # delete_many deleted the edges of its jobs with "job IN (...) OR depends_on IN
    # (...)": no index serves an OR of two subqueries, and every delete (the admin's
    # action, `pgjobs delete`) read the whole edge table, 28 ms at 125,000 edges for
    # one job, where each side through its own index takes 0.05 ms.
    ids = finished_jobs_analyzed(count=20000)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO pgjobs_jobdependency (job_id, depends_on_id, satisfied)
            SELECT id, id - 1, true FROM unnest(%s::bigint[]) AS id
            WHERE id %% 2 = 0 AND id > %s
            """,
            [ids, min(ids)],
        )
        cursor.execute("ANALYZE pgjobs_jobdependency")
    edge = JobDependency.objects.order_by("-id").first()
    doomed = Job.objects.filter(pk=edge.depends_on_id)

    found = captured_plans(
        lambda: transitions.delete_many(doomed), 'DELETE FROM "pgjobs_jobdependency"'
    )

    assert "Seq Scan on pgjobs_jobdependency" not in found, found
    assert not JobDependency.objects.filter(pk=edge.pk).exists()


def test_the_no_worker_warning_finds_a_late_job_through_the_claim_index():
    # With no worker alive, the job list and the dashboard look for a late due job of an
    # unpaused queue, one row. Left in the job's default order (newest first), the
    # planner walked the primary key back through every job when none was found (every
    # due job in a paused queue, as while workers are stopped for maintenance): 331 ms
    # at 500,000 jobs, 0.6 ms through the claim index.
    from django_pgjobs.admin import dashboard
    from django_pgjobs.models import Queue

    Queue.objects.update_or_create(name="default", defaults={"paused": True})
    with connection.cursor() as cursor:
        # Finished jobs of the last weeks, then the paused queue's backlog: the newest.
        cursor.execute(
            """
            INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,
                                    max_attempts, run_at, created_at, finished_at, errors,
                                    meta, pending_dependencies)
            SELECT 'testproject.demo.tasks.add', 'default', '[]', '{}',
                   CASE WHEN n > 20000 THEN 'available' ELSE 'completed' END, 0, 1, 3,
                   now() - interval '20 days' + n * interval '1 minute',
                   now() - interval '20 days' + n * interval '1 minute',
                   CASE WHEN n <= 20000 THEN now() END, '[]', '{}', 0
            FROM generate_series(1, 20300) AS n
            """
        )
        cursor.execute("ANALYZE pgjobs_job")
        cursor.execute("ANALYZE pgjobs_queue")

    found = captured_plans(dashboard.no_worker_warning, '"run_at" <')

    assert "pgjobs_job_claim" in found and "pgjobs_job_pkey" not in found, found
