"""Rows no reader can choke on (issue 16): whatever is in the tables, written by SQL, an
old version or a bug, no worker, scheduler, API answer or admin page fails on it.

Two layers: CHECK constraints refuse what no reader could load (times outside years
1-9999, a NaN timeout, a backoff no retry can be computed from), and the readers
survive what still gets in (odd JSON, JSON Python can't read back, unknown tasks,
connectors and queues). A worker fails a job it can't run with a clear error
(discarded, the error kept) and goes on with the others it claimed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from django_pgjobs.api.tokens import issue
from django_pgjobs.models import Connector, Job, Queue, Schedule, SchedulerProcess
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from tests.conftest import WorkerProcess
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"


def sql(statement: str, params: Any = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def insert_job(**columns: str) -> int:
    """A job row written by SQL: ``columns`` are SQL expressions over the defaults."""
    values = {
        "task": f"'{ADD}'",
        "queue": "'default'",
        "args": "'[1, 2]'",
        "kwargs": "'{}'",
        "state": "'available'",
        "priority": "0",
        "attempt": "0",
        "max_attempts": "3",
        "run_at": "now() - interval '1 second'",
        "created_at": "now()",
        "errors": "'[]'",
        "pending_dependencies": "0",
        "meta": "'{}'",
        **columns,
    }
    names, expressions = ", ".join(values), ", ".join(values.values())
    return sql(f"INSERT INTO pgjobs_job ({names}) VALUES ({expressions}) RETURNING id")[0][0]


# -- the database refuses what no reader could load -----------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "run_at = '0001-01-01 00:00:00+14'",
        "run_at = '0044-03-15 BC'",
        "run_at = 'infinity'",
        "run_at = '-infinity'",
        "run_at = '10000-01-01 00:00:00+00'",
        "run_at = '9999-12-31 12:00:00+00'",
        "created_at = '0001-01-01 00:00:00+00'",
        "finished_at = 'infinity'",
        "attempted_at = '0001-01-01 00:00:00+00'",
        "timeout = 'NaN'",
        "timeout = 'Infinity'",
        "timeout = -1",
        "timeout = 1e300",
    ],
)
def test_the_database_refuses_job_values_no_reader_could_use(statement):
    job = JobFactory()
    refused = pytest.raises(IntegrityError, match=r"pgjobs_job_(times|timeout)_in_range")
    with refused, transaction.atomic():
        sql(f"UPDATE pgjobs_job SET {statement} WHERE id = %s", [job.pk])


@pytest.mark.parametrize(
    "table, statement",
    [
        ("pgjobs_queue", "backoff_base = 'NaN'"),
        ("pgjobs_queue", "backoff_max = 1e12"),
        ("pgjobs_queue", "backoff_jitter = 2"),
        ("pgjobs_queue", "backoff_strategy = 'random'"),
        ("pgjobs_queue", "updated_at = 'infinity'"),
        ("pgjobs_schedule", "next_fire_at = '0001-01-01 00:00:00+14'"),
        ("pgjobs_schedule", "last_fire_at = 'infinity'"),
        ("pgjobs_workerprocess", "heartbeat_at = '-infinity'"),
        ("pgjobs_schedulerprocess", "started_at = '0001-01-01 00:00:00+14'"),
        ("pgjobs_apitoken", "expires_at = '0001-01-01 00:00:00+14'"),
        ("pgjobs_connector", "created_at = 'infinity'"),
        ("pgjobs_routine", "next_run_at = 'infinity'"),
        ("pgjobs_scheduletick", "fire_at = '-infinity'"),
    ],
)
def test_the_database_refuses_such_values_in_every_table(table, statement, rows):
    refused = pytest.raises(IntegrityError, match=r"_in_range|_backoff_valid")
    with refused, transaction.atomic():
        sql(f"UPDATE {table} SET {statement}")


@pytest.fixture
def rows() -> None:
    """A row in each table the constraints guard."""
    from tests.factories import ConnectorFactory, QueueFactory, WorkerProcessFactory

    QueueFactory(name="default")
    schedule = Schedule.objects.create(name="s", cron="* * * * *", task=ADD)
    WorkerProcessFactory()
    SchedulerProcess.objects.create(host="h", pid=1)
    issue("ci", ["*"])
    ConnectorFactory(name="hook")
    sql("INSERT INTO pgjobs_routine (name, next_run_at, last_result) VALUES ('r', now(), '')")
    sql(
        "INSERT INTO pgjobs_scheduletick (schedule_id, fire_at, fired_at, error)"
        " VALUES (%s, now(), now(), '')",
        [schedule.pk],
    )


#: The job table's constraints that migration 0023 writes by hand, compactly.
COMPACT = ("pgjobs_job_state_valid", "pgjobs_job_times_in_range", "pgjobs_job_timeout_in_range")

_EARLIEST, _END = "'0001-01-02 00:00:00+00'", "'9999-12-31 00:00:00+00'"
_JUST_BEFORE = "::timestamptz - interval '1 microsecond'"
#: (column, SQL values) to try: each edge of each rule, on both sides, and NULL.
_TIMES = [f"{_EARLIEST}{_JUST_BEFORE}", _EARLIEST, f"{_END}{_JUST_BEFORE}", _END, "now()"]
_EDGES = {
    **{column: _TIMES for column in ("run_at", "created_at")},
    **{column: [*_TIMES, "NULL"] for column in ("attempted_at", "finished_at")},
    "state": [*(f"'{state}'" for state in JobState.values), "'Available'", "''", "'done'"],
    "timeout": ["NULL", "0", "-1", "1e-9", "31536000", "31536000.000001", "'NaN'",
                "'Infinity'", "'-Infinity'"],
}  # fmt: skip


def test_the_job_tables_hand_written_constraints_say_what_the_models_say():
    """Migration 0023 writes three of them compactly (PostgreSQL plans every CHECK for
    every statement): each must accept and refuse exactly what the model's, as Django
    writes it, does, at every edge."""
    sql("CREATE TEMP TABLE model_job (LIKE pgjobs_job)")
    sql("CREATE TEMP TABLE table_job (LIKE pgjobs_job)")
    for constraint in Job._meta.constraints:
        if constraint.name in COMPACT:
            with connection.schema_editor(atomic=False) as editor:
                sql(f"ALTER TABLE model_job ADD {constraint.constraint_sql(Job, editor)}")
            (definition,) = sql(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'pgjobs_job'::regclass AND conname = %s",
                [constraint.name],
            )[0]
            sql(f"ALTER TABLE table_job ADD CONSTRAINT {constraint.name} {definition}")
    added = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'model_job'::regclass"
    assert sql(added) == [(3,)]
    differences = []
    for column, values in _EDGES.items():
        for value in values:
            taken = {table: _accepts(table, column, value) for table in ("model", "table")}
            if taken["model"] != taken["table"]:
                differences.append((column, value, taken))
    assert differences == []
    # Not vacuous: the edges include what both refuse.
    assert not _accepts("table", "timeout", "0") and _accepts("table", "timeout", "NULL")
    assert not _accepts("table", "finished_at", _END) and _accepts("table", "state", "'waiting'")


def _accepts(table: str, column: str, value: str) -> bool:
    row = {
        "task": "'t'", "queue": "'default'", "args": "'[]'", "kwargs": "'{}'",
        "state": "'available'", "priority": "0", "attempt": "0", "max_attempts": "1",
        "run_at": "now()", "created_at": "now()", "errors": "'[]'",
        "pending_dependencies": "0", "meta": "'{}'", "id": "1",
    }  # fmt: skip
    row[column] = value
    try:
        with transaction.atomic():
            sql(f"INSERT INTO {table}_job ({', '.join(row)}) VALUES ({', '.join(row.values())})")
            raise _Accepted
    except _Accepted:
        return True
    except IntegrityError:
        return False


class _Accepted(Exception):
    """Rolls back a row that went in."""


# -- the readers survive what still gets in --------------------------------------------------

#: Job rows a worker can't run as they stand, with what the error it records says.
#: A decimal that jsonb keeps as it is and Python's json read as infinity: a float
#: can't hold it, and no JSON text can say infinity.
PAST_A_FLOAT = "9" * 400 + ".5"

ODD_ROWS: dict[str, tuple[dict[str, str], str]] = {
    "args an object": ({"args": """'{"a": 1}'"""}, "args is a JSON object, not a JSON array"),
    "args a string": ({"args": "'\"12\"'"}, "args is a JSON string"),
    "args null": ({"args": "'null'"}, "args is null"),
    "kwargs a list": ({"kwargs": "'[1]'"}, "kwargs is a JSON array, not a JSON object"),
    "kwargs a number": ({"kwargs": "'7'"}, "kwargs is a JSON int"),
    "meta a list": ({"meta": "'[]'"}, "meta is a JSON array"),
    "args with a number Python can't read": (
        {"args": "'[1" + "0" * 5000 + "]'"},
        "args: its JSON can't be read by Python",
    ),
    # Read as infinity, it ran the task with inf (and answers said Infinity: below).
    "args with a decimal past a float's range": (
        {"args": f"'[{PAST_A_FLOAT}]'"},
        "is beyond a float's range",  # in args, the only column of it
    ),
    "kwargs nested deeper than Python reads": (
        {"kwargs": "'" + '{"a":' * 3000 + "1" + "}" * 3000 + "'"},
        "kwargs: its JSON is nested deeper than Python can read",
    ),
}  # fmt: skip

#: Rows a worker runs or fails as usual, whatever else is odd in them.
ODD_BUT_RUNNABLE = {
    "errors an object": {"errors": """'{"not": "a list"}'"""},
    "errors a list of strings": {"errors": """'["boom", 3, null]'"""},
    "result a number Python can't read": {"result": "'1" + "0" * 5000 + "'"},
    "meta with unknown keys": {"meta": """'{"pipeline": [1], "x": {"y": null}}'"""},
}


@pytest.mark.parametrize("case", ODD_ROWS)
def test_a_worker_discards_a_job_it_cant_run_keeps_the_error_and_runs_the_others(worker, case):
    columns, message = ODD_ROWS[case]
    before = JobFactory()
    odd = insert_job(**columns)
    after = JobFactory()
    assert worker.drain() == {"completed": 2, "discarded": 1}
    assert Job.objects.get(pk=before.pk).state == Job.objects.get(pk=after.pk).state == "completed"
    state, errors = sql("SELECT state, errors::text FROM pgjobs_job WHERE id = %s", [odd])[0]
    assert state == "discarded"
    assert "UnrunnableJob" in errors and message in errors, errors
    assert not Job.objects.filter(state="executing").exists()


@pytest.mark.parametrize("case", ODD_BUT_RUNNABLE)
def test_other_odd_json_does_not_stop_a_job(worker, case):
    insert_job(**ODD_BUT_RUNNABLE[case])
    assert worker.drain() == {"completed": 1}


#: Error records Python's json can't read (written by SQL), which the database appends to.
UNREADABLE_ERRORS = {
    "nested deeper than Python reads": "'" + "[" * 3000 + "]" * 3000 + "'",
    "a number of 5,001 digits": """'[{"attempt": 1""" + "0" * 5000 + """, "error": "e"}]'""",
}


@pytest.mark.parametrize("case", UNREADABLE_ERRORS)
def test_a_job_whose_errors_python_cant_read_is_discarded_and_the_worker_goes_on(worker, case):
    """The records a discard wrote came back as the text Python can't read, and the
    worker's log line of the discard took it for a list of records: AttributeError out
    of the drain, the other jobs of its batch left unrun."""
    odd = insert_job(task="'tests.tasks_for_tests.give_up'", args="'[]'",
                     errors=UNREADABLE_ERRORS[case])  # fmt: skip
    after = JobFactory()
    assert worker.drain() == {"discarded": 1, "completed": 1}
    assert Job.objects.get(pk=after.pk).state == "completed"
    [(state, last)] = sql("SELECT state, errors -> -1 ->> 'error' FROM pgjobs_job WHERE id = %s",
                          [odd])  # fmt: skip
    assert (state, last) == ("discarded", "DiscardJob: the input is not worth retrying")


@pytest.mark.parametrize("case", UNREADABLE_ERRORS)
def test_a_rescue_of_a_job_whose_errors_python_cant_read_returns_every_job(caplog, case):
    """The rescue's log line of each job took its errors for a list of records: a
    TypeError out of rescue_orphaned (a worker's heartbeat thread runs it, and catches
    only database errors), the jobs after it not announced."""
    from django_pgjobs import maintenance
    from tests.factories import WorkerProcessFactory

    dead = WorkerProcessFactory(heartbeat_at=timezone.now() - timedelta(days=1))
    held = {"state": "'executing'", "lease": "gen_random_uuid()", "attempt": "1",
            "attempted_at": "now()", "worker_id": str(dead.pk)}  # fmt: skip
    odd = insert_job(errors=UNREADABLE_ERRORS[case], **held)
    plain = insert_job(**held)
    assert maintenance.rescue_orphaned(timezone.now()) == 2
    assert set(Job.objects.values_list("state", flat=True)) == {"available"}
    assert f"rescued job {odd} (testproject.demo.tasks.add): (its errors" in caplog.text
    assert f"rescued job {plain} (testproject.demo.tasks.add): WorkerLost" in caplog.text


def test_unknown_tasks_connectors_and_queues_stop_nothing(worker):
    unknown_task = insert_job(task="'nowhere.nothing'")
    unknown_connector = insert_job(connector="'gone'")
    unknown_queue = insert_job(queue="'nowhere'")
    plain = JobFactory()
    assert worker.drain() == {"completed": 1, "retryable": 2}
    states = dict(Job.objects.values_list("pk", "state"))
    assert states == {
        unknown_task: "retryable",  # UnknownTask: a worker on newer code may know it
        unknown_connector: "retryable",  # UnknownConnector: it may be created again
        unknown_queue: "available",  # no worker serves it; the admin and API show it
        plain.pk: "completed",
    }
    assert "UnknownTask" in Job.objects.get(pk=unknown_task).errors[0]["error"]
    assert "UnknownConnector" in Job.objects.get(pk=unknown_connector).errors[0]["error"]


def test_a_connector_whose_stored_config_is_not_an_object_fails_its_job_clearly(worker):
    Connector.objects.create(name="odd", kind="http", config={"url": "http://127.0.0.1:9"})
    sql("""UPDATE pgjobs_connector SET config = '[1, 2]' WHERE name = 'odd'""")
    job = Job.enqueue("django_pgjobs.connectors.tasks.call", connector="odd")
    assert worker.drain() == {"retryable": 1}
    job.refresh_from_db()
    assert "config: must be a JSON object, not list" in job.errors[0]["error"]


@pytest.mark.parametrize("connector_id", [2**32 + 1, 2**47, 2**63 - 1, -1])
def test_a_connector_of_any_id_a_row_holds_runs_its_jobs_under_its_concurrency(
    worker, connector_id
):
    """The lock its slot takers share was the connector id shifted into a bigint: an
    id past 2**47 (written by SQL, or a sequence restarted high) made a key past
    PostgreSQL's bigint, and each attempt of each of its jobs failed with
    "ProgrammingError: function pg_advisory_xact_lock(numeric) does not exist"."""
    Connector.objects.create(name="odd", kind="http", config={"url": "http://127.0.0.1:9"},
                             concurrency=1)  # fmt: skip
    sql("UPDATE pgjobs_connector SET id = %s WHERE name = 'odd'", [connector_id])
    jobs = [Job.enqueue("tests.tasks_for_connectors.connector_name", connector="odd")
            for _ in range(2)]  # fmt: skip
    assert worker.drain() == {"completed": 2}
    assert [Job.objects.get(pk=job.pk).result for job in jobs] == ["odd", "odd"]


def test_a_queue_whose_backoff_no_retry_can_be_computed_from_falls_back_to_the_default(worker):
    """Written around the CHECK constraint (dropped here, as in a database restored
    without it): the job is retried on the default policy, the worker goes on."""
    Queue.objects.get_or_create(name="default")
    sql("ALTER TABLE pgjobs_queue DROP CONSTRAINT pgjobs_queue_backoff_valid")
    sql("UPDATE pgjobs_queue SET backoff_base = 'NaN', backoff_jitter = 5 WHERE name = 'default'")
    job = Job.enqueue("tests.tasks_for_tests.raises_odd", args=["nul"])
    assert worker.drain() == {"retryable": 1}
    job.refresh_from_db()
    assert job.run_at > job.attempted_at
    assert "a\\x00b" in job.errors[0]["error"]  # the NUL, escaped


# -- the readers: API and admin ----------------------------------------------------------------


def all_odd_rows() -> list[int]:
    ids = [insert_job(**columns) for columns, _ in ODD_ROWS.values()]
    ids += [insert_job(**columns) for columns in ODD_BUT_RUNNABLE.values()]
    ids += [insert_job(task="'nowhere.nothing'"), insert_job(queue="'no/such queue'")]
    ids.append(insert_job(state="'discarded'", errors="""'{"error": "x"}'""", finished_at="now()"))
    ids.append(insert_job(state="'completed'", result="'[[[[1]]]]'", finished_at="now()"))
    return ids


def test_the_api_shows_every_odd_row(client):
    token = issue("ci", ["*"])[1]
    for job_id in all_odd_rows():
        response = client.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, (job_id, response.content[:300])
        assert response.json()["id"] == job_id


def test_the_admin_lists_shows_and_deletes_every_odd_row(admin_client):
    ids = all_odd_rows()
    changelist = reverse("admin:pgjobs_job_changelist")
    assert admin_client.get(changelist).status_code == 200
    for query in ["?q=nothing", "?state=discarded", "?queue=nowhere", f"?q={ids[0]}"]:
        assert admin_client.get(changelist + query).status_code == 200, query
    for job_id in ids:
        page = admin_client.get(reverse("admin:pgjobs_job_change", args=[job_id]))
        assert page.status_code == 200, (job_id, page.content[-500:])
        deleting = admin_client.get(reverse("admin:pgjobs_job_delete", args=[job_id]))
        assert deleting.status_code == 200, job_id
    response = admin_client.post(
        changelist,
        {"action": "delete_jobs", "_selected_action": ids, "confirmed": "yes"},
    )
    assert response.status_code == 302
    assert not Job.objects.filter(pk__in=ids).exists()


# -- the scheduler ---------------------------------------------------------------------------


def test_the_scheduler_records_a_tick_it_cant_enqueue_and_fires_the_others():
    good = Schedule.objects.create(name="good", cron="* * * * *", task=ADD, args=[1, 2])
    odd = {}
    for name, column, value in [
        ("args an object", "args", """'{"a": 1}'"""),
        ("kwargs unreadable", "kwargs", """'{"a": 1""" + "0" * 5000 + "}'"),
        ("task unknown", "task", "'nowhere.nothing'"),
        ("queue invalid", "queue", "'no such queue'"),
        ("priority of a smallint nobody may use", "priority", "-32768"),
    ]:
        schedule = Schedule.objects.create(name=name, cron="* * * * *", task=ADD, args=[1, 2])
        sql(f"UPDATE pgjobs_schedule SET {column} = {value} WHERE id = %s", [schedule.pk])
        odd[name] = schedule.pk
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'")
    Scheduler(routines=[]).run_once()
    good.refresh_from_db()
    assert good.ticks.get().job_id is not None
    for name, pk in odd.items():
        tick = Schedule.objects.get(pk=pk).ticks.get()
        if name.startswith("priority"):
            assert tick.job_id is not None  # odd, but a job can hold it
        else:
            assert tick.error and tick.job_id is None, name


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("args", "'" + "[" * 3000 + "]" * 3000 + "'", "its JSON is nested deeper than Python"),
        ("kwargs", """'{"a": 1""" + "0" * 5000 + "}'", "its JSON can't be read by Python"),
    ],
)
def test_a_tick_of_arguments_python_cant_read_says_why(admin_client, column, value, problem):
    """The tick's error named a class of ours: "PayloadError: args must be a list, not
    Unreadable" (as a connector's config did). So did the admin's Run now."""
    schedule = Schedule.objects.create(name="odd", cron="* * * * *", task=ADD, args=[1, 2])
    sql(f"UPDATE pgjobs_schedule SET {column} = {value},"
        " next_fire_at = now() - interval '1 minute' WHERE id = %s", [schedule.pk])  # fmt: skip
    Scheduler(routines=[]).run_once()
    said = f"PayloadError: {column} can't be read: {problem}"
    tick = schedule.ticks.get()
    assert tick.job_id is None and tick.error.startswith(said), tick.error
    assert tick.error.endswith("; edit or delete the schedule")
    response = admin_client.post(f"/admin/pgjobs/schedule/{schedule.pk}/run-now/", follow=True)
    [message] = [str(m) for m in response.context["messages"]]
    assert "Unreadable" not in message and f"{column} can't be read: {problem}" in message
    assert not Job.objects.exists()


def test_the_scheduler_goes_on_past_a_schedule_it_cant_plan(caplog):
    good = Schedule.objects.create(name="good", cron="* * * * *", task=ADD)
    broken = Schedule.objects.create(name="broken", cron="* * * * *", task=ADD)
    sql("UPDATE pgjobs_schedule SET cron = 'not a cron' WHERE id = %s", [broken.pk])
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'")
    Scheduler(routines=[]).run_once()
    assert good.ticks.exists() and not broken.ticks.exists()


def test_a_schedule_it_cant_plan_is_logged_once_and_wakes_the_scheduler_for_nothing(caplog):
    """It stays due, and the loop slept MIN_SLEEP (0.5 s) between passes for it, for good:
    now it sleeps until the next real tick (or MAX_SLEEP), trying it again on each pass."""
    Schedule.objects.create(name="hourly", cron="0 * * * *", task=ADD, args=[1, 2])
    broken = Schedule.objects.create(name="broken", cron="* * * * *", task=ADD, args=[1, 2])
    sql("UPDATE pgjobs_schedule SET cron = 'not a cron' WHERE id = %s", [broken.pk])
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute' WHERE id = %s",
        [broken.pk])  # fmt: skip
    start = timezone.now()
    clock = [start]
    sleeps: list[float] = []
    scheduler = Scheduler(routines=[], clock=lambda: clock[0])

    def sleep_until(when: datetime) -> None:
        sleeps.append((when - clock[0]).total_seconds())
        clock[0] = max(clock[0], when)
        if len(sleeps) == 4:
            scheduler.request_stop()

    scheduler.loop(sleep_until)
    # From start, not from the row's next_fire_at: within a minute of the hour the
    # loop's passes fire the hourly tick and plan the next hour's.
    next_hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert sleeps[0] == pytest.approx(min((next_hour - start).total_seconds(), 60))
    assert min(sleeps) > 1, sleeps
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "'broken'" in r.message]
    assert len(errors) == 1, [r.message for r in errors]
    assert "not a cron" in errors[0].message


def test_the_admin_says_which_schedule_cant_be_planned_and_why(admin_client):
    broken = Schedule.objects.create(name="broken", cron="* * * * *", task=ADD, args=[1, 2])
    sql("UPDATE pgjobs_schedule SET cron = 'not a cron' WHERE id = %s", [broken.pk])
    listed = admin_client.get(reverse("admin:pgjobs_schedule_changelist")).content.decode()
    page = admin_client.get(reverse("admin:pgjobs_schedule_change", args=[broken.pk]))
    for html in (listed, page.content.decode()):
        assert "can&#x27;t be planned: cron expression &#x27;not a cron&#x27; has 3 fields" in html


# -- a row psycopg can't load, past the constraints ------------------------------------------


@pytest.fixture
def without_time_constraint() -> Iterator[None]:
    """The job table without its CHECK on times, as a database restored from a dump
    taken before it: what still gets in, the worker must survive. Put back after."""
    sql("ALTER TABLE pgjobs_job DROP CONSTRAINT pgjobs_job_times_in_range")
    yield


def test_a_claimed_row_psycopg_cant_load_is_discarded_and_the_rest_run(
    worker, without_time_constraint
):
    """The audit's finding: one such row made every claim of its queue raise DataError
    after the claim had committed, leaving every job it claimed executing."""
    before = JobFactory()
    odd = insert_job(run_at="'0001-01-01 00:00:00+14'")
    future = insert_job(run_at="'infinity'", state="'scheduled'")
    after = JobFactory()
    assert worker.drain() == {"completed": 2, "discarded": 1}
    assert Job.objects.filter(pk__in=[before.pk, after.pk], state="completed").count() == 2
    state, errors = sql("SELECT state, errors::text FROM pgjobs_job WHERE id = %s", [odd])[0]
    assert state == "discarded" and "UnrunnableJob" in errors and "run_at" in errors
    assert sql("SELECT state FROM pgjobs_job WHERE id = %s", [future]) == [("scheduled",)]
    assert not sql("SELECT id FROM pgjobs_job WHERE state = 'executing'")


@pytest.mark.django_db(transaction=True)
def test_a_worker_process_survives_a_row_it_cant_load():
    """``runworker --burst`` on a queue holding a BC row: the row is discarded, the other
    jobs complete, and the worker exits 0 (it used to exit with DataError, every time)."""
    sql("ALTER TABLE pgjobs_job DROP CONSTRAINT pgjobs_job_times_in_range")
    try:
        a_burst_discards_it_and_runs_the_rest(insert_job(run_at="'0001-01-01 00:00:00+14'"))
    finally:
        sql("DELETE FROM pgjobs_job")
        sql(
            "ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_times_in_range CHECK ("
            + _constraint_condition("pgjobs_job_times_in_range")
            + ")"
        )


def a_burst_discards_it_and_runs_the_rest(odd: int) -> WorkerProcess:
    """Run ``runworker --burst`` on the default queue holding job ``odd`` and three plain
    jobs: it exits 0, ``odd`` discarded, the others completed. The process, for its output."""
    plain = [JobFactory().pk for _ in range(3)]
    process = WorkerProcess("--burst", "--queues", "default")
    assert process.wait(120) == 0, process.output()
    states = dict(Job.objects.values_list("pk", "state"))
    assert [states[pk] for pk in plain] == ["completed"] * 3
    assert states[odd] == "discarded"
    return process


def _constraint_condition(name: str) -> str:
    """The SQL condition of the model's CHECK constraint ``name``."""
    from django.db.models.sql import Query

    constraint = next(c for c in Job._meta.constraints if c.name == name)
    query = Query(Job)
    where = query.build_where(constraint.condition)
    compiler = query.get_compiler(connection=connection)
    text, params = where.as_sql(compiler, connection)
    return connection.ops.compose_sql(text, params)


def test_json_columns_of_every_model_load_what_python_cant_read():
    """Connector config, schedule args, token scopes: each reads back as text, not an error."""
    insert_job(args="'[1" + "0" * 5000 + "]'")
    job = Job.objects.get()
    assert isinstance(job.args, str) and job.args.startswith("[1000")
    assert "can't be read by Python" in job.args.problem
    assert json.loads(json.dumps({"args": job.args}))  # the API can answer with it


def strict_json(text: str | bytes) -> Any:
    """``text`` read as JSON parsers other than Python's read it: no NaN, no Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_decimal_past_a_floats_range_is_shown_as_stored_not_as_infinity(client):
    """Python's json read it as infinity, and the API answered ``[Infinity, 1]`` and
    ``pgjobs show --json`` printed it: JavaScript's JSON.parse, jq and every other
    strict parser refuse that. It reads as its text, as other JSON Python can't read."""
    stored = f"[{PAST_A_FLOAT}, 1]"
    job_id = insert_job(args=f"'{stored}'", kwargs=f"""'{{"a": -{PAST_A_FLOAT}}}'""",
                        result=f"'{PAST_A_FLOAT}'")  # fmt: skip
    job = Job.objects.get(pk=job_id)
    assert job.args == stored and "beyond a float's range" in job.args.problem
    assert job.kwargs.startswith('{"a": -999') and job.result == PAST_A_FLOAT
    token = issue("ci", ["*"])[1]
    answer = client.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert strict_json(answer.content)["args"] == stored
    shown = io.StringIO()
    call_command("pgjobs", "show", "--json", str(job_id), stdout=shown)
    assert strict_json(shown.getvalue())["result"] == PAST_A_FLOAT


# -- what a worker writes ----------------------------------------------------------------

ODD_KINDS = ["nul", "surrogate", "nan", "huge int", "cycle", "deep", "object", "nul key", "large"]


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_a_result_no_column_can_hold_is_stored_as_a_stand_in_saying_why(worker, kind):
    job = Job.enqueue("tests.tasks_for_tests.returns_odd", args=[kind])
    assert worker.drain() == {"completed": 1}
    job.refresh_from_db()
    assert set(job.result) == {"repr", "unstorable"}, job.result
    assert job.result["unstorable"]


@pytest.mark.parametrize("kind", [*ODD_KINDS, "plain"])
def test_an_error_of_any_text_is_recorded(worker, kind):
    job = Job.enqueue("tests.tasks_for_tests.raises_odd", args=[kind], max_attempts=1)
    assert worker.drain() == {"discarded": 1}
    job.refresh_from_db()
    record = job.errors[0]
    assert record["error"].startswith("ValueError: ")
    assert len(record["error"]) <= 10_100 and len(record["traceback"]) <= 50_100


@pytest.mark.django_db(transaction=True)
def test_odd_outcomes_in_one_batch_are_all_written(threaded_worker, wait):
    """The completer writes many outcomes in one statement: one the database refused
    used to leave every job of its batch executing."""
    jobs = [Job.enqueue("tests.tasks_for_tests.returns_odd", args=[kind]) for kind in ODD_KINDS]
    jobs += [
        Job.enqueue("tests.tasks_for_tests.raises_odd", args=[kind], max_attempts=1)
        for kind in ODD_KINDS
    ]
    jobs += [Job.enqueue(ADD, args=[n, n]) for n in range(10)]
    threaded_worker(concurrency=4)
    wait(lambda: not Job.objects.exclude(state__in=["completed", "discarded"]).exists(), 60)
    assert Job.objects.filter(state="completed").count() == len(ODD_KINDS) + 10
    assert Job.objects.filter(state="discarded").count() == len(ODD_KINDS)


#: JSON no column of ours should hold, each in every JSON column in turn.
ODD_JSON = [
    """'{"a": 1}'""",
    "'[1, \"x\"]'",
    "'\"text\"'",
    "'null'",
    "'1" + "0" * 5000 + "'",
    "'" + "[" * 3000 + "]" * 3000 + "'",
]
JSON_COLUMNS = {
    "schedule": ("pgjobs_schedule", ["args", "kwargs"]),
    "connector": ("pgjobs_connector", ["config", "secret_names"]),
    "workerprocess": ("pgjobs_workerprocess", ["queues"]),
    "apitoken": ("pgjobs_apitoken", ["queues", "connectors"]),
}


@pytest.mark.parametrize("model", JSON_COLUMNS)
@pytest.mark.parametrize("value", ODD_JSON, ids=range(len(ODD_JSON)))
def test_every_admin_page_shows_odd_json_in_every_column(admin_client, rows, model, value):
    table, columns = JSON_COLUMNS[model]
    sql(f"UPDATE {table} SET " + ", ".join(f"{column} = {value}" for column in columns))
    assert admin_client.get(reverse(f"admin:pgjobs_{model}_changelist")).status_code == 200
    pk = sql(f"SELECT {'id' if model != 'queue' else 'name'} FROM {table} LIMIT 1")[0][0]
    page = admin_client.get(reverse(f"admin:pgjobs_{model}_change", args=[pk]))
    assert page.status_code == 200, page.content[-300:]


@pytest.mark.parametrize("value", ODD_JSON, ids=range(len(ODD_JSON)))
def test_a_token_whose_scopes_are_odd_json_grants_nothing(client, value):
    """Not even by accident: a scope that is text must not match queues by substring."""
    _, plain = issue("odd", ["default"])
    sql(f"UPDATE pgjobs_apitoken SET queues = {value}, connectors = {value}")
    job = JobFactory()
    answer = client.get(f"/jobs/{job.pk}", headers={"Authorization": f"Bearer {plain}"})
    assert answer.status_code == 404
    enqueued = client.post(
        "/jobs",
        json.dumps({"task": ADD, "args": [1, 2]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {plain}"},
    )
    assert enqueued.status_code == 403 and Job.objects.count() == 1


@pytest.mark.parametrize("timezone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
@pytest.mark.parametrize("cron", ["* * * * *", "0 0 29 2 *", "@yearly"])
@pytest.mark.parametrize(
    "next_fire_at", ["'0001-01-02 00:00:00+00'", "'9999-12-30 23:59:59+00'", "now()"]
)
def test_the_scheduler_plans_from_times_at_the_edges(timezone, cron, next_fire_at):
    good = Schedule.objects.create(name="good", cron="* * * * *", task=ADD)
    edge = Schedule.objects.create(name="edge", cron=cron, timezone=timezone, task=ADD)
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'")
    sql(f"UPDATE pgjobs_schedule SET next_fire_at = {next_fire_at} WHERE id = %s", [edge.pk])
    Scheduler(routines=[]).run_once()
    assert good.ticks.count() == 1
    Schedule.objects.get(pk=edge.pk)  # still readable


def test_a_schedule_that_fails_in_any_way_does_not_stop_the_others(monkeypatch):
    good = Schedule.objects.create(name="good", cron="* * * * *", task=ADD)
    Schedule.objects.create(name="odd", cron="* * * * *", task=ADD)
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'")
    planned = Schedule.cron_schedule

    def cron_schedule(self: Schedule) -> Any:
        if self.name == "odd":
            raise OverflowError("date value out of range")
        return planned(self)

    monkeypatch.setattr(Schedule, "cron_schedule", cron_schedule)
    Scheduler(routines=[]).run_once()
    assert good.ticks.count() == 1


@pytest.mark.django_db(transaction=True)
def test_post_jobs_run_runs_past_odd_rows(client):
    """The API's inline runner claims as a worker does: odd rows are discarded, the
    others run, the answer lists each."""
    token = issue("ci", ["*"], can_run=True)[1]
    odd = [insert_job(**columns) for columns, _ in ODD_ROWS.values()]
    plain = JobFactory().pk
    response = client.post("/jobs/run?limit=20", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content[:300]
    assert response.json()["outcomes"] == {"discarded": len(odd), "completed": 1}
    assert Job.objects.get(pk=plain).state == "completed"


@pytest.mark.parametrize("queue", ["default", "mail", "serial", "keyed"])
def test_a_job_at_the_attempt_counters_limit_stops_nothing_on_its_queue(db, queue):
    # Its claim made "integer out of range" of the whole claim statement: every claim
    # of its queue failed, so no job of that queue ran again.
    if queue == "keyed":
        Queue.objects.create(name="keyed", key_concurrency=2)
    odd = insert_job(queue=f"'{queue}'", attempt="2147483647", priority="1")  # claimed first
    plain = JobFactory(queue=queue)
    worker = Worker([queue], concurrency=10)
    for _ in range(3):  # a blocking queue runs one job per claim
        worker.drain()
    states = dict(Job.objects.values_list("pk", "state"))
    assert states == {odd: "completed", plain.pk: "completed"}
    assert Job.objects.get(pk=odd).attempt == 2147483647  # stays at its limit


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_outcome_a_row_refuses_costs_only_its_job_not_its_batch(worker_process, wait):
    # A row whose finish the database refuses (here a trigger of the site's own, as an
    # audit table's might): its batch of outcomes failed with it, and the other jobs
    # of the batch stayed executing until a rescue ran them again.
    refused = insert_job()
    sql(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.id = {refused} AND NEW.state = 'completed' THEN"
        " RAISE EXCEPTION 'refused by the site'; END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER refuse_one BEFORE UPDATE ON pgjobs_job FOR EACH ROW"
        " EXECUTE FUNCTION refuse_one()")  # fmt: skip
    try:
        others = [JobFactory().pk for _ in range(40)]
        worker = worker_process("--concurrency", "20")
        wait(lambda: Job.objects.filter(pk__in=others, state="completed").count() == 40, timeout=30)
        assert set(Job.objects.filter(pk__in=others).values_list("attempt", flat=True)) == {1}
        assert Job.objects.get(pk=refused).state == "executing"  # until a rescue pass
        assert worker.stop() == 0
    finally:  # a transactional test's flush keeps functions and triggers
        sql("DROP TRIGGER refuse_one ON pgjobs_job")
        sql("DROP FUNCTION refuse_one()")
