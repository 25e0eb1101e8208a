"""A job keeps its first and latest error records (kept_errors.KEPT), however it fails,
and a row written by hand with any number of them is read as no more than that."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.tasks import task_backends

from django_pgjobs import Job
from django_pgjobs.api.tokens import issue
from django_pgjobs.kept_errors import KEPT
from tests.admin_helpers import detail
from tests.test_hardening_rows import insert_job, sql

pytestmark = pytest.mark.django_db

RAISES = "tests.tasks_for_tests.raises_odd"


def records(count: int, padding: int = 0) -> str:
    """SQL for ``count`` error records of attempts 1..count, each ``padding`` bytes more."""
    return (
        "(SELECT jsonb_agg(jsonb_build_object('attempt', n, 'at', "
        f"to_json(now() - make_interval(secs => {count} - n)), 'error', 'ValueError: try ' || n, "
        f"'traceback', repeat('x', {padding})) ORDER BY n) FROM generate_series(1, {count}) AS n)"
    )


def attempts(job: Job) -> list[int]:
    return [record["attempt"] for record in job.errors]


def test_a_failure_past_the_bound_keeps_the_first_and_the_latest_records(worker):
    pk = insert_job(
        task=f"'{RAISES}'", args="'[\"plain\"]'", attempt="40", max_attempts="41",
        errors=records(40),
    )  # fmt: skip
    worker.drain()
    job = Job.objects.get(pk=pk)
    assert job.state == "discarded"
    assert len(job.errors) == KEPT
    assert attempts(job) == [1, *range(23, 42)]
    assert job.errors[-1]["error"].startswith("ValueError: ")
    assert job.meta["errors_dropped"] == 21


def test_every_append_is_bounded_and_counted_and_other_updates_are_left_alone():
    pk = insert_job(state="'discarded'", finished_at="now()")
    for attempt in range(1, 26):
        sql(
            "UPDATE pgjobs_job SET errors = errors || jsonb_build_array("
            "jsonb_build_object('attempt', %s)) WHERE id = %s",
            [attempt, pk],
        )
    job = Job.objects.get(pk=pk)
    assert attempts(job) == [1, *range(7, 26)]
    assert job.meta == {"errors_dropped": 5}
    sql("UPDATE pgjobs_job SET meta = '{\"note\": 1}', priority = 3 WHERE id = %s", [pk])
    assert Job.objects.get(pk=pk).meta == {"note": 1}


@pytest.fixture
def fifty_thousand() -> Job:
    """A job written by SQL (no append: no trigger) with 50,000 records of 1.5 kB."""
    pk = insert_job(state="'discarded'", finished_at="now()", errors=records(50_000, 1_500))
    return Job.objects.defer("errors").get(pk=pk)


def test_the_admin_page_of_a_row_of_50000_records_shows_the_first_and_the_latest(
    admin_client, fifty_thousand
):
    response = admin_client.get(detail(fifty_thousand))
    assert response.status_code == 200
    page = response.content.decode()
    assert len(page) < 200_000, len(page)
    assert page.count(">Attempt ") == KEPT
    assert "Attempt 1 failed" in page and "Attempt 50000 failed" in page
    assert "Attempt 2 failed" not in page and "Attempt 49981 failed" not in page
    assert "49,980 more error records not kept" in page


def test_the_api_answers_a_row_of_50000_records_with_the_first_and_the_latest(
    client, fifty_thousand
):
    token = issue("ci", ["*"])[1]
    response = client.get(
        f"/jobs/{fifty_thousand.pk}", headers={"Authorization": f"Bearer {token}"}
    )
    body = response.json()
    assert len(response.content) < 10_000
    assert [record["attempt"] for record in body["errors"]] == [1, *range(49_982, 50_001)]
    assert body["errors_not_kept"] == 49_980


def test_a_task_result_of_a_row_of_50000_records_has_the_first_and_the_latest(fifty_thousand):
    Job.objects.filter(pk=fifty_thousand.pk).update(task="tests.django_tasks_for_tests.add")
    result = task_backends["default"].get_result(str(fifty_thousand.pk))
    assert len(result.errors) == KEPT


def test_a_worker_runs_a_row_of_50000_records_and_cuts_it_back(worker):
    pk = insert_job(
        task=f"'{RAISES}'", args="'[\"plain\"]'", attempt="50000", max_attempts="50001",
        errors=records(50_000, 1_500),
    )  # fmt: skip
    worker.drain()  # reads the whole row once (0.9 s for these 96 MB), writes it cut back
    job = Job.objects.get(pk=pk)
    assert attempts(job) == [1, *range(49_983, 50_002)]
    assert job.meta["errors_dropped"] == 49_981


@pytest.mark.parametrize(
    ("errors", "meta", "kept", "meta_after"),
    [
        ("'{\"a\": 1}'", "'{}'", 2, {}),  # no array: appended to, never cut
        ("'\"text\"'", "'{}'", 2, {}),
        ("'null'", "'{}'", 2, {}),
        (records(25), "'[1, 2]'", KEPT, {"errors_dropped": 6}),  # meta no object
        (records(25), "'\"text\"'", KEPT, {"errors_dropped": 6}),
        (records(25), '\'{"errors_dropped": "many"}\'', KEPT, {"errors_dropped": 6}),
        (records(25), "'{\"errors_dropped\": -5}'", KEPT, {"errors_dropped": 6}),
        (records(25), '\'{"errors_dropped": {"n": 1}}\'', KEPT, {"errors_dropped": 6}),
        (records(25), "'{\"errors_dropped\": 1e400}'", KEPT, {"errors_dropped": 10**15}),
        (records(25), "'{\"errors_dropped\": 2.5}'", KEPT, {"errors_dropped": 8}),
        (records(25), "'{\"errors_dropped\": 1e-400}'", KEPT, {"errors_dropped": 6}),
    ],
)
def test_an_append_to_a_row_of_odd_errors_or_meta_writes_a_whole_count(
    errors, meta, kept, meta_after
):
    pk = insert_job(state="'discarded'", finished_at="now()", errors=errors, meta=meta)
    sql("UPDATE pgjobs_job SET errors = errors || '[{\"attempt\": 99}]' WHERE id = %s", [pk])
    (length, meta_text) = sql(
        "SELECT jsonb_array_length(errors), meta::text FROM pgjobs_job WHERE id = %s", [pk]
    )[0]
    assert length == kept
    assert json.loads(meta_text) == meta_after and "." not in meta_text, meta_text


def test_the_show_command_of_a_row_of_50000_records_prints_the_first_and_the_latest(
    fifty_thousand,
):
    out = io.StringIO()
    call_command("pgjobs", "show", str(fifty_thousand.pk), stdout=out)
    text = out.getvalue()
    assert len(text) < 100_000, len(text)
    assert text.count("\nattempt ") == KEPT
    assert "attempt 1 at" in text and "attempt 50000 at" in text
    assert "49,980 more error records not kept" in text
    out = io.StringIO()
    call_command("pgjobs", "show", str(fifty_thousand.pk), "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert len(shown["errors"]) == KEPT and shown["errors_not_kept"] == 49_980
