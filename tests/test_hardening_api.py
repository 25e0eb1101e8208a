"""The HTTP API never answers 500 to odd input, and keeps server details to itself.

A sweep of every endpoint with odd ids, odd query strings, odd headers and odd
values in every field of POST /jobs: each gets a 4xx with a JSON error, and
nothing is written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction
from django.test import Client

from django_pgjobs import Job, limits
from django_pgjobs.api.tokens import issue
from django_pgjobs.transitions import ERROR_LENGTH, TRACEBACK_LENGTH
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"
HUGE = 10**30
#: Odd values of a field, as JSON text. The values PostgreSQL can't store (NUL,
#: lone surrogates, non-finite numbers, dates out of its range) are the boundary
#: checks' (tests/test_hardening_input*.py); these are what else a client may send.
ODD_JSON_VALUES = [
    str(HUGE), str(-HUGE), "1e308", "1.5", "0", "-1", "true", "[]", "{}", '"x"',
    '"' + "x" * 100_000 + '"', "[" * 10_000 + "]" * 10_000, '{"a": ' * 5_000 + "1" + "}" * 5_000,
    '"2024-02-30T00:00:00Z"', '"2024-01-01T00:00:00+99:00"', '"1e309"', '"\\u00e9t\\u00e9"',
]  # fmt: skip
FIELDS = ["task", "args", "kwargs", "queue", "run_at", "priority", "max_attempts",
          "unique_key", "connector", "timeout"]  # fmt: skip
ODD_IDS = ["0", "-1", str(HUGE), "abc", "%00", "%ED%A0%80", "1.5"]
ODD_QUERY_VALUES = ["%00", "%ED%A0%80", "%FF", str(HUGE), "-1", "nan", "inf", "1e309", ",,,"]


@pytest.fixture
def token() -> str:
    return issue("ci", ["*"], can_run=True, connectors=["*"])[1]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Sweep:
    """Keeps every request answered 5xx (or re-raised by the test client), and every
    error answer that is not JSON."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.failures: list[str] = []

    def send(self, method: str, path: str, body: str | None = None, **headers: str) -> None:
        what = f"{method.upper()} {path[:100]} {(body or '')[:80]}"
        try:
            with transaction.atomic():  # one refused INSERT must not hide the others
                response = self._send(method, path, body, headers)
        except Exception as error:
            self.failures.append(f"{what} raised {type(error).__name__}: {str(error)[:150]}")
            return
        if response.status_code >= 500:
            self.failures.append(f"{what} answered {response.status_code}")
        elif response.status_code >= 400 and response.get("Content-Type") == "application/json":
            response.json()

    def _send(self, method: str, path: str, body: str | None, headers: dict[str, str]) -> Any:
        if method == "post":
            return self.client.post(
                path, body or "", content_type="application/json", headers=headers
            )
        return self.client.get(path, headers=headers)

    def check(self) -> None:
        assert not self.failures, "\n".join(self.failures)


def test_odd_values_in_every_field_of_post_jobs_are_4xx_and_write_nothing(client, token):
    sweep = Sweep(client)
    for field in FIELDS:
        for value in ODD_JSON_VALUES:
            fields = {"task": ADD, "args": [1, 2], field: "VALUE"}
            body = json.dumps(fields).replace('"VALUE"', value)
            sweep.send("post", "/jobs", body, **auth(token))
    sweep.check()
    assert not Job.objects.exclude(task=ADD).exists()


def test_odd_bodies_and_headers_are_4xx(client, token):
    sweep = Sweep(client)
    for body in ["", "null", "[]", "{", '{"task": "' + "\x00" + '"}', "\ufeff{}", "NaN",
                 '{"task": NaN}', '{"task": Infinity}', "[" * 100_000]:  # fmt: skip
        sweep.send("post", "/jobs", body, **auth(token))
    for header in ["Bearer \x00", f"Bearer {token}\x00", "Bearer " + "x" * 100_000,
                   "Basic Zm9vOmJhcg==", "bearer  " + token + "  "]:  # fmt: skip
        sweep.send("post", "/jobs", json.dumps({"task": ADD}), Authorization=header)
        sweep.send("get", "/jobs/1", Authorization=header)
    sweep.check()


def test_odd_ids_and_query_strings_are_4xx(client, token):
    JobFactory()
    sweep = Sweep(client)
    for odd in ODD_IDS:
        sweep.send("get", f"/jobs/{odd}", **auth(token))
    for name in ["queue", "status", "limit", "max_seconds", "other"]:
        for value in ODD_QUERY_VALUES:
            sweep.send("post", f"/jobs/run?{name}={value}", **auth(token))
    sweep.check()


def test_errors_in_api_answers_carry_no_traceback_unless_the_setting_says_so(
    client, token, settings
):
    record = {
        "attempt": 1,
        "at": "2030-01-01T00:00:00+00:00",
        "error": "ValueError: no",
        "exception_class": "builtins.ValueError",
    }
    trace = 'File "/srv/app/shop/tasks.py", line 7'
    job = JobFactory(state="discarded", errors=[{**record, "traceback": trace}])
    answer = client.get(f"/jobs/{job.pk}", headers=auth(token)).json()
    assert answer["errors"] == [record]
    assert "/srv/app" not in json.dumps(answer)
    settings.PGJOBS = {**settings.PGJOBS, "API_TRACEBACKS": True}
    answer = client.get(f"/jobs/{job.pk}", headers=auth(token)).json()
    assert answer["errors"][0]["traceback"] == trace


def test_an_error_record_written_by_hand_comes_back_clipped_as_a_worker_writes_one(
    client, token, settings
):
    """Their number was bounded, not their size: one record with a 2 MB error (50 MB
    as well) came back whole in every answer about the job."""
    huge = "x" * 2_000_000
    job = JobFactory(state="discarded", errors=[{"attempt": 1, "error": huge, "traceback": huge}])
    settings.PGJOBS = {**settings.PGJOBS, "API_TRACEBACKS": True}
    response = client.get(f"/jobs/{job.pk}", headers=auth(token))
    [record] = response.json()["errors"]
    assert record["error"] == limits.shortened(huge, ERROR_LENGTH)
    assert record["traceback"] == limits.shortened(huge, TRACEBACK_LENGTH)
    assert len(response.content) < ERROR_LENGTH + TRACEBACK_LENGTH + 1_000


def test_a_job_whose_errors_are_not_a_list_of_records_is_still_answered(client, token):
    for errors in [{"not": "a list"}, ["a string"], [None, 3]]:
        job = JobFactory(errors=errors)
        assert client.get(f"/jobs/{job.pk}", headers=auth(token)).status_code == 200
