"""Rows whose JSON values are larger than anything enqueue or a worker writes, written by
SQL: the API and the admin show each value up to twice ``MAX_PAYLOAD_BYTES`` and name
the others, reading no more of them from the database than their size; the job list
reads no more than ``shown.LISTED_BYTES`` of any; no indented page grows past the limit.
Schedules, connectors and worker processes likewise, in the scheduler, a job's connector
and the admin, whose forms save no value they did not read.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from django_pgjobs import shown
from django_pgjobs.api.tokens import issue
from django_pgjobs.connectors import get_connector
from django_pgjobs.connectors.errors import ConnectorMisconfigured
from django_pgjobs.models import Connector, Job, ReadableJSONField, Schedule, WorkerProcess
from django_pgjobs.scheduler import Scheduler
from tests.factories import ConnectorFactory, connector_form
from tests.test_hardening_rows import insert_job, sql

pytestmark = pytest.mark.django_db

#: The limit the tests set: twice this, 2,000 bytes of JSON text, is shown.
PAYLOAD = 1_000


@pytest.fixture(autouse=True)
def small_limit(settings) -> None:
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": PAYLOAD}


@pytest.fixture
def bearer(db) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}


def large_job(**columns: str) -> int:
    """A completed job whose args, kwargs, result and meta are each over the limit."""
    columns = {"state": "'completed'", **columns}
    return insert_job(
        finished_at="now()",
        args="jsonb_build_array(repeat('a', 5000))",
        kwargs="jsonb_build_object('k', repeat('k', 5000))",
        result="to_jsonb(repeat('r', 5000))",
        meta="jsonb_build_object('pipeline', repeat('m', 5000))",
        **columns,
    )


def test_the_api_names_each_value_over_the_limit_instead_of_sending_it(client, bearer):
    job_id = large_job()
    response = client.get(f"/jobs/{job_id}", headers=bearer)
    assert response.status_code == 200
    answer = response.json()
    assert len(response.content) < 2_000, response.content[:300]
    assert answer["args"] is None and answer["kwargs"] is None and answer["result"] is None
    assert set(answer["not_shown"]) == {"args", "kwargs", "result"}
    assert answer["not_shown"]["result"] == (
        "not shown: its JSON is 5,002 bytes, over the 2,000 shown "
        "(twice PGJOBS['MAX_PAYLOAD_BYTES'])"
    )


#: 40 KB of hex digits, as SQL: incompressible, so stored in over 8 times the 2,000 shown.
INCOMPRESSIBLE = (
    "to_jsonb((SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1250)))"
)


def test_a_value_stored_far_over_the_limit_is_named_by_its_stored_size(client, bearer):
    # Its size as text is not measured: that converted 100 MB to text twice.
    job_id = insert_job(state="'completed'", finished_at="now()", result=INCOMPRESSIBLE)
    (stored,) = sql("SELECT pg_column_size(result) FROM pgjobs_job WHERE id = %s", [job_id])[0]
    assert stored > shown.FAR_OVER * 2 * PAYLOAD
    answer = client.get(f"/jobs/{job_id}", headers=bearer).json()
    assert answer["result"] is None and answer["args"] == [1, 2]
    assert re.fullmatch(
        r"not shown: its JSON is ([\d,]+) bytes as stored, far over the 2,000 shown "
        r"\(twice PGJOBS\['MAX_PAYLOAD_BYTES'\]\)",
        answer["not_shown"]["result"],
    ), answer["not_shown"]
    assert f"{stored:,} bytes as stored" in answer["not_shown"]["result"]


def test_values_within_the_limit_are_shown_whole_and_none_named(client, bearer):
    # 1,000 bytes of compact JSON, as enqueue takes it: PostgreSQL's text spaces it out.
    job_id = insert_job(
        state="'completed'",
        finished_at="now()",
        args=f"'{json.dumps([0] * 499, separators=(',', ':'))}'",
        result="to_jsonb(repeat('r', 1990))",
    )
    answer = client.get(f"/jobs/{job_id}", headers=bearer).json()
    assert answer["args"] == [0] * 499
    assert answer["result"] == "r" * 1990
    assert answer["not_shown"] == {}


def test_post_jobs_run_names_a_result_over_the_limit(client, bearer):
    Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
    # As a job that returned it before MAX_PAYLOAD_BYTES was lowered.
    sql(
        "CREATE FUNCTION pg_temp.big() RETURNS trigger AS $$ BEGIN "
        "NEW.result := to_jsonb(repeat('r', 5000)); RETURN NEW; END $$ LANGUAGE plpgsql"
    )
    sql(
        "CREATE TRIGGER big BEFORE UPDATE OF state ON pgjobs_job FOR EACH ROW "
        "WHEN (NEW.state = 'completed') EXECUTE FUNCTION pg_temp.big()"
    )
    response = client.post("/jobs/run", headers=bearer)
    assert response.status_code == 200, response.content[:300]
    (job,) = response.json()["jobs"]
    assert job["state"] == "completed" and job["result"] is None
    assert "5,002 bytes" in job["not_shown"]["result"]


@pytest.mark.parametrize(
    "columns",
    [
        {"args": "jsonb_build_array(repeat('a', 5000))"},
        {"kwargs": "jsonb_build_object('k', repeat('k', 5000))"},
        {"errors": "(SELECT jsonb_agg(jsonb_build_object('attempt', n, 'error', 'e'))"
                   " FROM generate_series(1, 50) AS n)"},
    ],
)  # fmt: skip
def test_post_jobs_answers_a_duplicate_as_get_shows_it(client, bearer, columns):
    """The answer to an enqueue that found an active job holding its unique key is that
    job, as GET /jobs/<id> shows it: it was the row as Job.enqueue loaded it, every
    value whole (a holder written by SQL with 255 MB of args sent them all) and every
    error record."""
    holder = insert_job(unique_key="'nightly'", **columns)
    response = client.post(
        "/jobs",
        {"task": "testproject.demo.tasks.add", "args": [1, 2], "unique_key": "nightly"},
        content_type="application/json",
        headers=bearer,
    )
    assert response.status_code == 200, response.content[:300]
    answer = response.json()
    assert answer.pop("duplicate") is True and answer["id"] == holder
    assert answer == client.get(f"/jobs/{holder}", headers=bearer).json()
    assert len(response.content) < 3_000, response.content[:300]


def test_the_admin_page_names_each_value_over_the_limit(admin_client):
    job_id = large_job()
    page = admin_client.get(reverse("admin:pgjobs_job_change", args=[job_id]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "aaaa" not in text and "kkkk" not in text and "rrrr" not in text and "mmmm" not in text
    for said in ("Arguments not shown", "Keyword arguments not shown", "Result not shown"):
        assert f"{said}: its JSON is 5,0" in text, said
    assert "Meta (pipeline, snoozes) not shown: its JSON is 5,016 bytes" in text


def test_an_admin_page_indents_a_value_only_while_that_stays_within_the_limit(admin_client):
    # 600 zeros 50 levels down: 1,900 bytes of JSON text, 62,000 characters indented.
    deep = "[" * 50 + ",".join(["0"] * 600) + "]" * 50
    job_id = insert_job(state="'completed'", finished_at="now()", result=f"'{deep}'")
    page = admin_client.get(reverse("admin:pgjobs_job_change", args=[job_id]))
    assert page.status_code == 200
    assert len(page.content) < 30_000, len(page.content)
    assert deep in page.content.decode()  # whole, compact


def test_a_small_value_is_still_indented(admin_client):
    job_id = insert_job(state="'completed'", finished_at="now()", result="""'{"a": [1]}'""")
    page = admin_client.get(reverse("admin:pgjobs_job_change", args=[job_id]))
    assert "{\n  &quot;a&quot;: [\n    1\n  ]\n}" in page.content.decode()


def test_the_job_list_reads_no_large_value_and_says_so(admin_client):
    small = insert_job(args="'[\"hello\"]'")
    large = insert_job(
        args=f"jsonb_build_array(repeat('a', {shown.LISTED_BYTES}))",
        meta=f"jsonb_build_object('snoozed', jsonb_build_object('count', 2), "
        f"'pad', repeat('m', {shown.LISTED_BYTES}))",
    )
    page = admin_client.get(reverse("admin:pgjobs_job_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "&#x27;hello&#x27;" in text
    assert "aaaa" not in text
    assert f"(over {shown.LISTED_BYTES:,} bytes: not listed)" in text
    assert {small, large} <= set(Job.objects.values_list("pk", flat=True))


def test_every_admin_action_on_a_large_job_answers(admin_client):
    job_id = large_job(state="'discarded'")
    for url in (
        reverse("admin:pgjobs_job_delete", args=[job_id]),
        reverse("admin:pgjobs_job_history", args=[job_id]),
    ):
        assert admin_client.get(url).status_code == 200, url
    retried = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job_id]))
    assert retried.status_code == 302
    assert Job.objects.get(pk=job_id).state == "available"


def test_error_records_of_any_size_are_read_no_larger_than_a_worker_writes(
    client, bearer, admin_client
):
    record = (
        "jsonb_build_object('attempt', 1, 'error', repeat('E', 100000), "
        "'traceback', repeat('t', 100000), 'junk', repeat('j', 100000), "
        "repeat('k', 100000), 1)"
    )
    job_id = insert_job(
        state="'retryable'",
        attempt="1",
        errors=f"jsonb_build_array({record}, to_jsonb(repeat('s', 100000)), "
        "(SELECT jsonb_object_agg(g::text, g) FROM generate_series(1, 1000) g))",
    )
    answer = client.get(f"/jobs/{job_id}", headers=bearer).json()
    first, text, many_keys = answer["errors"]
    assert first["error"] == "E" * 9_997 + "..."
    assert "traceback" not in first  # API_TRACEBACKS is off
    assert first["junk"] == "j" * 2_000
    assert first[f"{'k' * 100}"] == 1  # a key of 100,000 characters, cut
    assert text == "s" * 2_000
    assert len(many_keys) == 20
    assert len(json.dumps(answer)) < 20_000
    page = admin_client.get(reverse("admin:pgjobs_job_change", args=[job_id]))
    assert page.status_code == 200
    assert "E" * 9_997 + "..." in page.content.decode()
    assert "t" * 49_997 + "..." in page.content.decode()


def test_a_workers_page_reads_no_json_of_the_jobs_it_holds(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import WorkerProcessFactory

    worker = WorkerProcessFactory()
    job_id = insert_job(
        state="'executing'",
        lease="gen_random_uuid()",
        attempt="1",
        attempted_at="now()",
        worker_id=str(worker.pk),
        args="jsonb_build_array(repeat('a', 5000))",
    )
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(reverse("admin:pgjobs_workerprocess_change", args=[worker.pk]))
    assert page.status_code == 200 and f"#{job_id} " in page.content.decode()
    read = [q["sql"] for q in queries if '"pgjobs_job"."args"' in q["sql"]]
    assert read == []  # 100 jobs of 900 kB arguments took 180 MB to list


def test_a_jobs_page_reads_no_json_of_the_jobs_it_links_to(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    done = insert_job(
        state="'completed'", finished_at="now()", result="to_jsonb(repeat('r', 5000))"
    )
    gather = insert_job(state="'waiting'", pending_dependencies="0")
    after = insert_job(state="'waiting'", pending_dependencies="1")
    sql(
        "INSERT INTO pgjobs_jobdependency (job_id, depends_on_id, satisfied) "
        "VALUES (%s, %s, true), (%s, %s, false)",
        [gather, done, after, gather],
    )
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(reverse("admin:pgjobs_job_change", args=[gather]))
    text = page.content.decode()
    assert page.status_code == 200 and f"#{done} " in text and f"#{after} " in text
    linked = [q["sql"] for q in queries if "pgjobs_jobdependency" in q["sql"]]
    assert len(linked) == 2 and not any('"result"' in q or '"args"' in q for q in linked)


def test_pgjobs_show_names_each_value_over_the_limit():
    from tests.test_cli import as_json, pgjobs

    job_id = large_job()
    code, out, _ = pgjobs("show", str(job_id))
    assert code == 0 and len(out) < 3_000, out[:300]
    assert "result:               not shown: its JSON is 5,002 bytes, over the 2,000 shown" in out
    printed = as_json("show", str(job_id))
    assert printed["result"] is None and set(printed["not_shown"]) == set(shown.FIELDS)


@pytest.mark.parametrize("action, state", [("retry", "discarded"), ("cancel", "available")])
def test_retry_and_cancel_in_the_admin_read_no_json_of_the_job(admin_client, action, state):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    job_id = large_job(state=f"'{state}'")
    with CaptureQueriesContext(connection) as queries:
        answer = admin_client.post(reverse(f"admin:pgjobs_job_{action}", args=[job_id]))
    assert answer.status_code == 302
    assert Job.objects.get(pk=job_id).state == ("available" if action == "retry" else "cancelled")
    read = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"result"' in q["sql"]]
    assert read == []


# -- schedules, connectors and worker processes ------------------------------------------

ADD = "testproject.demo.tasks.add"
#: A JSON array of one string of this many characters: its text is over the limit.
LARGE_ARRAY = "jsonb_build_array(repeat('a', 5000))"


@pytest.fixture
def loaded(monkeypatch) -> list[int]:
    """The length of each JSON value any query loads, as Django reads it."""
    sizes: list[int] = []
    read = ReadableJSONField.from_db_value

    def from_db_value(self, value, expression, connection):
        sizes.append(len(value) if isinstance(value, str | bytes) else 0)
        return read(self, value, expression, connection)

    monkeypatch.setattr(ReadableJSONField, "from_db_value", from_db_value)
    return sizes


def large_schedule(name: str, column: str, value: str = LARGE_ARRAY) -> Schedule:
    schedule = Schedule.objects.create(name=name, cron="* * * * *", task=ADD, args=[1, 2])
    sql(f"UPDATE pgjobs_schedule SET {column} = {value} WHERE id = %s", [schedule.pk])
    return schedule


def test_the_scheduler_reads_no_large_arguments_records_why_and_fires_the_others_once(
    loaded, caplog
):
    good = Schedule.objects.create(name="good", cron="* * * * *", task=ADD, args=[1, 2])
    large_args = large_schedule("large args", "args")
    large_kwargs = large_schedule(
        "large kwargs", "kwargs", "jsonb_build_object('k', repeat('k', 5000))"
    )
    wrong_type = large_schedule("args a string", "args", "'\"text\"'")
    sql("UPDATE pgjobs_schedule SET next_fire_at = now() - interval '1 minute'")
    now = timezone.now()
    scheduler = Scheduler(routines=[])
    scheduler.run_once(now)
    scheduler.run_once(now)  # nothing is due twice
    assert good.ticks.get().job_id is not None
    assert max(loaded) < 2 * PAYLOAD, "a value over the limit was read"
    for schedule, field in ((large_args, "args"), (large_kwargs, "kwargs")):
        tick = schedule.ticks.get()
        assert tick.job_id is None
        assert tick.error.startswith(f"PayloadError: {field} not read: its JSON is 5,0"), tick.error
        assert "edit or delete the schedule" in tick.error
        logged = [r.message for r in caplog.records if r.levelname == "ERROR"]
        assert any(f"{schedule.name!r}" in m and f"{field} not read" in m for m in logged)
    assert wrong_type.ticks.get().error and wrong_type.ticks.get().job_id is None
    assert Job.objects.count() == 1
    # And the next tick of each fires (or is refused) once more, the others unharmed.
    scheduler.run_once(now + timedelta(minutes=1))
    assert good.ticks.count() == 2 and large_args.ticks.count() == 2


def test_run_now_of_a_schedule_with_large_arguments_says_why_and_enqueues_nothing(
    admin_client, loaded
):
    schedule = large_schedule("large", "args")
    answer = admin_client.post(
        reverse("admin:pgjobs_schedule_run_now", args=[schedule.pk]), follow=True
    )
    assert (
        "nothing enqueued: PayloadError: args not read: its JSON is 5,0" in answer.content.decode()
    )
    assert not Job.objects.exists()
    assert max(loaded, default=0) < 2 * PAYLOAD


def test_a_schedule_with_large_arguments_is_shown_without_them_and_saved_without_them(
    admin_client, loaded
):
    schedule = large_schedule("large", "args")
    listed = admin_client.get(reverse("admin:pgjobs_schedule_changelist"))
    url = reverse("admin:pgjobs_schedule_change", args=[schedule.pk])
    page = admin_client.get(url)
    assert listed.status_code == page.status_code == 200
    text = page.content.decode()
    assert "aaaa" not in text and "aaaa" not in listed.content.decode()
    assert "not shown: its JSON is 5,0" in text and "it is kept as stored" in text
    assert 'name="args"' not in text and 'name="kwargs"' in text  # read-only, not a field
    for action in ("enable", "disable"):
        assert (
            admin_client.post(
                reverse(f"admin:pgjobs_schedule_{action}", args=[schedule.pk])
            ).status_code
            == 302
        )
    assert max(loaded) < 2 * PAYLOAD
    form = {
        "name": "large", "enabled": "on", "cron": "*/5 * * * *", "timezone": "UTC",
        "task": ADD, "kwargs": "{}", "queue": "", "priority": "", "jitter": "0",
        "overlap": "allow", "catch_up": "latest", "catch_up_window": "", "catch_up_limit": "100",
    }  # fmt: skip
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert sql("SELECT cron, octet_length(args::text) FROM pgjobs_schedule WHERE id = %s",
               [schedule.pk]) == [("*/5 * * * *", 5004)]  # fmt: skip


def large_connector(column: str, value: str) -> Connector:
    connector = ConnectorFactory(name="hook", secrets={"token": "t0ken-value"})
    sql(f"UPDATE pgjobs_connector SET {column} = {value} WHERE id = %s", [connector.pk])
    return connector


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("config", "jsonb_build_object('url', 'http://127.0.0.1:9/', 'pad', repeat('c', 5000))"),
        ("encrypted_secrets", "repeat('s', 5000)"),
    ],
)
def test_a_job_whose_connector_has_a_large_value_fails_saying_why(worker, loaded, column, value):
    large_connector(column, value)
    job = Job.enqueue("django_pgjobs.connectors.tasks.call", connector="hook")
    assert worker.drain() == {"retryable": 1}
    error = Job.objects.values_list("errors", flat=True).get(pk=job.pk)[0]["error"]
    assert f"connector 'hook' is misconfigured: {column}: not read: its " in error
    with pytest.raises(ConnectorMisconfigured, match=f"{column}: not read: its (JSON|text) is 5,0"):
        get_connector("hook")
    assert max(loaded) < 2 * PAYLOAD


@pytest.mark.parametrize(
    ("column", "value", "said"),
    [
        ("config", "jsonb_build_object('url', 'http://x/', 'pad', repeat('c', 5000))", "JSON"),
        ("description", "repeat('d', 5000)", "text"),
    ],
)
def test_a_connector_with_a_large_value_is_shown_without_it_and_saved_without_it(
    admin_client, loaded, column, value, said
):
    connector = large_connector(column, value)
    listed = admin_client.get(reverse("admin:pgjobs_connector_changelist"))
    url = reverse("admin:pgjobs_connector_change", args=[connector.pk])
    page = admin_client.get(url)
    assert listed.status_code == page.status_code == 200
    text = page.content.decode()
    assert f"not shown: its {said} is 50" in text.replace(",", "")
    assert f'name="{column}"' not in text
    assert "cccc" not in text and "dddd" not in text and "dddd" not in listed.content.decode()
    tested = admin_client.post(
        reverse("admin:pgjobs_connector_changelist"),
        {"action": "test_connection", "_selected_action": [connector.pk]},
        follow=True,
    )
    assert tested.status_code == 200
    assert max(loaded) < 2 * PAYLOAD
    form = connector_form(description="edited", concurrency="7", rate_period="1")
    form.pop(column)
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.content.decode()[:3000]
    stored = f"SELECT concurrency, octet_length({column}::text) FROM pgjobs_connector WHERE id = %s"
    size = sql(f"SELECT octet_length(({value})::text)")[0][0]
    assert sql(stored, [connector.pk]) == [(7, size)]
    assert Connector.objects.get(pk=connector.pk).get_secrets() == {"token": "t0ken-value"}


def test_a_connector_value_no_job_could_read_is_refused_when_written(admin_client):
    """Config or secrets over what a job reads (twice MAX_PAYLOAD_BYTES, as stored) were
    saved, by the admin or in code, and every job using the connector then failed: they
    are refused, naming the size and the limit, and nothing is written."""
    hook = ConnectorFactory(name="hook", secrets={"token": "t0ken-value"})
    before = sql("SELECT config, encrypted_secrets FROM pgjobs_connector")
    hook.config = {"url": "http://127.0.0.1:9/", "headers": {"X-Pad": "c" * 2 * PAYLOAD}}
    with pytest.raises(ValidationError, match=r"config.*over the 2,000 a job reads") as refused:
        hook.save()
    assert "cccc" not in str(refused.value)
    hook.refresh_from_db()
    with pytest.raises(ValidationError, match=r"secrets.*over the 2,000 a job reads"):
        hook.update_secrets({"api_key": "k" * 2 * PAYLOAD})
    with pytest.raises(ValidationError, match="over the 2,000 a job reads"):
        Connector(name="other", kind="http", config={"url": "http://x/"}).set_secrets(
            {"token": "k" * 2 * PAYLOAD}
        )
    page = admin_client.post(
        reverse("admin:pgjobs_connector_change", args=[hook.pk]),
        connector_form(secrets="token=" + "s" * 2 * PAYLOAD),
    ).content.decode()
    assert "over the 2,000 a job reads" in page and "ssss" not in page
    assert sql("SELECT config, encrypted_secrets FROM pgjobs_connector") == before
    assert get_connector("hook").secret("token") == "t0ken-value"


def test_a_worker_process_with_large_queues_is_listed_and_shown_without_them(admin_client, loaded):
    over = shown.LISTED_BYTES + 2000  # the list reads up to LISTED_BYTES, the page less
    worker = large_worker(over)
    listed = admin_client.get(reverse("admin:pgjobs_workerprocess_changelist"))
    page = admin_client.get(reverse("admin:pgjobs_workerprocess_change", args=[worker.pk]))
    assert listed.status_code == page.status_code == 200
    assert f"not shown: its JSON is {over + 4:,} bytes" in page.content.decode()
    assert f"not shown: its JSON is {over + 4:,} bytes, over the 10,000" in listed.content.decode()
    assert "aaaa" not in page.content.decode() and "aaaa" not in listed.content.decode()
    assert max(loaded) < 2 * PAYLOAD


def large_token(over: int = shown.LISTED_BYTES + 2000) -> tuple[int, str]:
    """A token whose queues and connectors were made large by SQL; its id and value."""
    token, plain = issue("large", ["default"], connectors=["hook"])
    sql(f"UPDATE pgjobs_apitoken SET queues = jsonb_build_array('default', repeat('a', {over})),"
        f" connectors = jsonb_build_array(repeat('c', {over})) WHERE id = %s",
        [token.pk])  # fmt: skip
    return token.pk, plain


def test_an_api_token_with_large_scopes_is_listed_shown_and_saved_without_them(
    admin_client, loaded
):
    pk, _ = large_token()
    listed = admin_client.get(reverse("admin:pgjobs_apitoken_changelist"))
    url = reverse("admin:pgjobs_apitoken_change", args=[pk])
    page = admin_client.get(url)
    assert listed.status_code == page.status_code == 200
    said = f"not shown: its JSON is {shown.LISTED_BYTES + 2000 + 15:,} bytes"
    assert said in page.content.decode() and said in listed.content.decode()
    for text in (page.content.decode(), listed.content.decode()):
        assert "aaaa" not in text and "cccc" not in text
    assert max(loaded) < 2 * PAYLOAD
    saved = admin_client.post(url, {"name": "renamed", "can_enqueue": "on", "active": "on"})
    assert saved.status_code == 302, saved.content.decode()[:3000]
    stored = "SELECT name, octet_length(queues::text), octet_length(connectors::text) "
    assert sql(stored + "FROM pgjobs_apitoken WHERE id = %s", [pk]) == [
        ("renamed", shown.LISTED_BYTES + 2000 + 15, shown.LISTED_BYTES + 2000 + 4)
    ]


def test_an_api_token_whose_scopes_are_too_large_to_read_is_refused_saying_why(
    client, loaded, settings
):
    from django_pgjobs.api import tokens

    _, plain = large_token(tokens.MAX_SCOPE_BYTES)
    job = Job.objects.create(task=ADD)
    answer = client.get(f"/jobs/{job.pk}", headers={"Authorization": f"Bearer {plain}"})
    assert answer.status_code == 401
    assert "too large to read" in answer.json()["message"]
    assert "aaaa" not in answer.content.decode()
    assert max(loaded, default=0) < 2 * PAYLOAD
    # A token within the bound still works.
    _, good = issue("good", ["*"])
    answer = client.get(f"/jobs/{job.pk}", headers={"Authorization": f"Bearer {good}"})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("active = false", "this token was revoked"),
        ("expires_at = now() - interval '1 day'", "this token has expired"),
    ],
)
def test_a_revoked_or_expired_token_with_large_scopes_is_told_so(client, loaded, change, said):
    # Told its scopes were too large to read, to be fixed in the admin: fixed, it
    # was still refused, for what it had been all along.
    from django_pgjobs.api import tokens

    pk, plain = large_token(tokens.MAX_SCOPE_BYTES)
    sql(f"UPDATE pgjobs_apitoken SET {change} WHERE id = %s", [pk])
    job = Job.objects.create(task=ADD)
    answer = client.get(f"/jobs/{job.pk}", headers={"Authorization": f"Bearer {plain}"})
    assert answer.status_code == 401
    assert answer.json()["message"] == said
    assert max(loaded, default=0) < 2 * PAYLOAD


def test_pgjobs_schedules_reads_no_arguments(loaded):
    large_schedule("large", "args")
    out = StringIO()
    call_command("pgjobs", "schedules", "--json", stdout=out)
    assert [s["name"] for s in json.loads(out.getvalue())["schedules"]] == ["large"]
    assert max(loaded, default=0) < 2 * PAYLOAD


def large_worker(over: int = shown.LISTED_BYTES + 2000) -> WorkerProcess:
    worker = WorkerProcess.objects.create(host="w", pid=1)
    sql(f"UPDATE pgjobs_workerprocess SET queues = jsonb_build_array(repeat('a', {over})) "
        "WHERE id = %s", [worker.pk])  # fmt: skip
    return worker


def test_pgjobs_stats_reads_no_large_queues_of_a_worker_and_says_why(loaded):
    large_worker()
    WorkerProcess.objects.create(host="v", pid=2, queues=["mail"])
    out = StringIO()
    call_command("pgjobs", "stats", "--json", stdout=out)
    by_host = {w["host"]: w for w in json.loads(out.getvalue())["workers"]}
    assert by_host["v"]["queues"] == ["mail"] and by_host["v"]["not_shown"] == {}
    assert by_host["w"]["queues"] is None and by_host["w"]["alive"]
    said = "not shown: its JSON is 12,004 bytes, over the 10,000 shown"
    assert by_host["w"]["not_shown"] == {"queues": said}
    out = StringIO()
    call_command("pgjobs", "stats", stdout=out)
    assert said in out.getvalue() and "aaaa" not in out.getvalue()
    assert max(loaded) < 2 * PAYLOAD


def test_rotation_refuses_a_connector_whose_secrets_are_too_large_and_rotates_the_others(
    settings, loaded
):
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": ["a" * 32]}
    good = ConnectorFactory(name="good", secrets={"token": "t0ken-value"})
    large = ConnectorFactory(name="large", secrets={"token": "t0ken-value"})
    padded = ConnectorFactory(name="padded", secrets={"token": "t0ken-value"})
    sql("UPDATE pgjobs_connector SET encrypted_secrets = repeat('s', 5000) WHERE id = %s",
        [large.pk])  # fmt: skip
    sql("UPDATE pgjobs_connector SET description = repeat('d', 5000), config = "
        "jsonb_build_object('url', 'http://x/', 'pad', repeat('c', 5000)) WHERE id = %s",
        [padded.pk])  # fmt: skip
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": ["b" * 32, "a" * 32]}
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("rotate_connector_secrets", stdout=out)
    assert "re-encrypted the secrets of 2 connector(s)" in out.getvalue()
    assert str(raised.value) == (
        "not re-encrypted, so the key that encrypted them is still needed: connector 'large': "
        "encrypted_secrets not read: its text is 5,000 bytes, over the 2,000 read "
        "(twice PGJOBS['MAX_PAYLOAD_BYTES']) (enter its secrets again, or delete it)"
    )
    assert max(loaded, default=0) < 2 * PAYLOAD
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": ["b" * 32]}  # the old key is gone
    for rotated in (good, padded):
        assert Connector.objects.get(pk=rotated.pk).get_secrets() == {"token": "t0ken-value"}
    kept = "SELECT encrypted_secrets = repeat('s', 5000) FROM pgjobs_connector WHERE id = %s"
    assert sql(kept, [large.pk]) == [(True,)]
    padding = "SELECT octet_length(description) FROM pgjobs_connector WHERE id = %s"
    assert sql(padding, [padded.pk]) == [(5000,)]


def large_tick(schedule: Schedule, size: int = shown.LISTED_BYTES + 2000) -> None:
    sql("INSERT INTO pgjobs_scheduletick (fire_at, fired_at, error, schedule_id) "
        f"VALUES (now(), now(), repeat('e', {size}), %s)", [schedule.pk])  # fmt: skip


def test_a_schedule_page_names_a_large_tick_error_instead_of_showing_it(admin_client):
    schedule = Schedule.objects.create(name="s", cron="* * * * *", task=ADD)
    large_tick(schedule)
    page = admin_client.get(reverse("admin:pgjobs_schedule_change", args=[schedule.pk]))
    assert page.status_code == 200
    assert "not shown: its text is 12,000 bytes, over the 10,000 shown" in page.content.decode()
    assert "eeee" not in page.content.decode()


def large_rows_of_each_admin() -> dict[str, int]:
    """A schedule, a connector and a worker process, each with large values, and
    rows deleted with them holding large values too (a tick) or pointing back (a slot)."""
    schedule = large_schedule("large", "args")
    large_tick(schedule)
    connector = large_connector(
        "config", "jsonb_build_object('url', 'http://x/', 'pad', repeat('c', 5000))"
    )
    sql("UPDATE pgjobs_connector SET description = repeat('d', 5000) WHERE id = %s",
        [connector.pk])  # fmt: skip
    sql("INSERT INTO pgjobs_connectorslot (connector_id, slot, job_id, lease) "
        "VALUES (%s, 1, 1, gen_random_uuid())", [connector.pk])  # fmt: skip
    return {"schedule": schedule.pk, "connector": connector.pk, "workerprocess": large_worker().pk}


@pytest.mark.parametrize("page", ["change", "delete", "history"])
@pytest.mark.parametrize("query", ["", "?_to_field=id"])
def test_no_admin_page_of_a_row_reads_a_large_value_of_it_or_of_rows_deleted_with_it(
    admin_client, loaded, page, query
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for model, pk in large_rows_of_each_admin().items():
        with CaptureQueriesContext(connection) as queries:
            answer = admin_client.get(reverse(f"admin:pgjobs_{model}_{page}", args=[pk]) + query)
        assert answer.status_code == 200, (model, answer.content[:500])
        text = answer.content.decode()
        assert "aaaa" not in text and "cccc" not in text and "dddd" not in text, model
        assert max(loaded, default=0) < 2 * PAYLOAD, model
        for text_column in ('"pgjobs_scheduletick"."error"', '"pgjobs_connector"."description"'):
            whole = [q["sql"] for q in queries if f"{text_column}," in q["sql"]]
            assert not whole, (model, whole[0][:300])


#: Values stored in over a claim's INLINE_BYTES (8 KB; md5s: repeat() compresses to
#: little), and over the limit the tests set (2,000 bytes).
LARGE_ARGS = "(SELECT jsonb_agg(md5(n::text)) FROM generate_series(1, 2000) AS n)"
LARGE_ERRORS = (
    "(SELECT jsonb_agg(jsonb_build_object('attempt', n, 'error', md5(n::text)))"
    " FROM generate_series(1, 1000) AS n)"
)
EXPECTED_ARGS = [hashlib.md5(str(n).encode()).hexdigest() for n in range(1, 2001)]


@pytest.mark.parametrize("how", ["unique key", "unique_for"])
def test_a_duplicate_enqueue_loads_no_large_value_of_the_holder(how):
    """Job.enqueue of a held unique key returns the holder, which it loaded whole: one
    written by SQL with 255 MB of args made each duplicate enqueue load them. Its large
    values are left to load when read, as any deferred field of a model."""
    from tests.tasks_for_tests import once_an_hour

    if how == "unique key":
        holder = insert_job(unique_key="'nightly'", args=LARGE_ARGS, errors=LARGE_ERRORS)
        job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], unique_key="nightly")
    else:
        holder = insert_job(
            task="'tests.tasks_for_tests.once_an_hour'",
            unique_key="'tests.tasks_for_tests.once_an_hour:daily'",
            args=LARGE_ARGS,
            errors=LARGE_ERRORS,
        )
        job = once_an_hour.using(unique_key="tests.tasks_for_tests.once_an_hour:daily").enqueue(
            "daily"
        )
    assert job.pk == holder and job.is_duplicate
    assert {"args", "errors"} <= job.get_deferred_fields()
    assert job.kwargs == {} and job.meta == {}  # small: loaded
    assert job.args == EXPECTED_ARGS  # the holder's, whole, once asked for
    assert len(job.errors) == 1000


def test_a_debounced_call_loads_no_large_value_of_the_job_it_joins():
    holder = insert_job(
        state="'scheduled'",
        run_at="now() + interval '1 minute'",
        meta="""'{"debounce": {"key": "cart-7", "seconds": 5}}'""",
        errors=LARGE_ERRORS,
    )
    job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], debounce_key="cart-7", debounce=5)
    assert job.pk == holder and job.is_duplicate
    assert job.args == [1, 2]  # this call's, given to the holder
    assert "errors" in job.get_deferred_fields()
    assert len(job.errors) == 1000


def test_a_django_task_enqueued_as_a_duplicate_is_answered_as_get_result_reads_it():
    try:
        from django.tasks import default_task_backend
    except ImportError:  # Django 5.2: the django-tasks package
        from django_tasks import default_task_backend

    from tests import django_tasks_for_tests as django_tasks

    holder = insert_job(
        task="'tests.django_tasks_for_tests.nightly_report'",
        unique_key="'nightly-report'",
        args=LARGE_ARGS,
        errors=LARGE_ERRORS,
    )
    result = django_tasks.nightly_report.enqueue()
    assert result.id == str(holder)
    again = default_task_backend.get_result(result.id)
    assert result.args == again.args == []  # over the limit: not read, as get_result
    assert result.errors == again.errors
