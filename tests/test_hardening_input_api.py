"""Hostile input at ``POST /jobs`` (issue 16): a 4xx naming the field and nothing written,
or a job that a worker runs and ``GET /jobs/<id>`` shows."""

# ruff: noqa: E501 - the tables of cases keep one case a line

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from django_pgjobs import Job
from django_pgjobs.api.tokens import issue
from tests.test_hardening_input import JSON, TEXT, drain_everything

pytestmark = pytest.mark.django_db

ANYTHING = "tests.tasks_for_tests.takes_anything"


@pytest.fixture
def token() -> str:
    return issue("ci", ["*"], can_run=True, connectors=["*"])[1]


def send(client: Client, token: str, body: str) -> Any:
    return client.post(
        "/jobs", body, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )


def test_a_run_at_before_year_one_in_utc_is_refused_not_stored(client, token):
    """The audit's finding: this was stored as a BC timestamp that no reader could load."""
    body = json.dumps({"task": ANYTHING, "run_at": "0001-01-01T00:00:00+14:00"})
    response = send(client, token, body)
    assert response.status_code == 400
    assert "out of range" in response.json()["fields"]["run_at"]
    assert not Job.objects.exists()


#: name -> (the body's JSON text, the field named, a part of the message)
REFUSED = {
    "run_at BC once in UTC": ('"run_at": "0001-01-01T00:00:00+14:00"', "run_at", "out of range"),
    "run_at on the last day": ('"run_at": "9999-12-31T12:00:00Z"', "run_at", "out of range"),
    "run_at with an offset of 99 hours": ('"run_at": "2030-01-01T00:00:00+99:00"', "run_at", "ISO 8601"),
    "run_at on a day that is none": ('"run_at": "2024-02-30T00:00:00Z"', "run_at", "ISO 8601"),
    "run_at in year 0": ('"run_at": "0000-06-01T00:00:00Z"', "run_at", "ISO 8601"),
    # Python's \d and int() read other scripts' digits: another reader would refuse them.
    "run_at in Arabic-Indic digits": ('"run_at": "\u0662\u0660\u0663\u0660-01-01T00:00:00Z"', "run_at", "in ASCII"),
    "run_at in fullwidth digits": ('"run_at": "2030-01-01T\uff10\uff10:00:00Z"', "run_at", "in ASCII"),
    "run_at with a final newline": ('"run_at": "2030-01-01T00:00:00Z\\n"', "run_at", "in ASCII"),
    "run_at with a space first": ('"run_at": " 2030-01-01T00:00:00Z"', "run_at", "in ASCII"),
    "timeout infinite (1e999)": ('"timeout": 1e999', "timeout", "at most"),
    "timeout absurd": ('"timeout": 1e300', "timeout", "at most 31536000"),
    "priority beyond smallint": ('"priority": 32768', "priority", "between"),
    "max_attempts of 30 digits": ('"max_attempts": 1000000000000000000000000000000', "max_attempts", "between"),
    "NUL in args": ('"args": ["a\\u0000b"]', "args", "NUL"),
    "NUL in a kwargs key": ('"kwargs": {"a\\u0000": 1}', "kwargs", "NUL"),
    "a lone surrogate in args": ('"args": ["\\ud800"]', "args", "surrogate"),
    "a lone surrogate in a nested key": ('"kwargs": {"a": {"\\udc00x": 1}}', "kwargs", "surrogate"),
    "an infinite number in args (1e400)": ('"args": [1e400]', "args", "not a finite number"),
    "args nested 101 deep": ('"args": ' + "[" * 101 + "]" * 101, "args", "nested more than 100"),
    "NUL in unique_key": ('"unique_key": "k\\u0000"', "unique_key", "NUL"),
    "a lone surrogate in unique_key": ('"unique_key": "\\udfff"', "unique_key", "surrogate"),
    "NUL in the queue": ('"queue": "default\\u0000"', "queue", "NUL"),
    "NUL in the connector": ('"connector": "x\\u0000"', "connector", "NUL"),
    "NUL in the task": ('"task": "tests.tasks_for_tests.takes_anything\\u0000"', "task", "NUL"),
    "an integer of 5000 digits": ('"args": [' + "9" * 5000 + "]", "body", "not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_value_is_400_naming_the_field_and_writes_nothing(client, token, case):
    fields, field, fragment = REFUSED[case]
    body = "{" + (f'"task": "{ANYTHING}", ' if '"task"' not in fields else "") + fields + "}"
    response = send(client, token, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert fragment in response.json()["fields"][field]
    assert not Job.objects.exists()


TAKEN = {
    "run_at on the earliest instant": '"run_at": "0001-01-02T00:00:00Z"',
    "run_at early, far east": '"run_at": "0001-01-02T13:00:00+13:00"',
    "run_at on the last instant": '"run_at": "9999-12-30T23:59:59.999999Z"',
    "an emoji, escaped": '"args": ["\\ud83d\\ude00"], "kwargs": {"\\ud83d\\ude42": 1}',
    "a backslash and u0000, as text": '"args": ["\\\\u0000"]',
    "an integer of 4300 digits": '"args": [' + "9" * 4300 + "]",
    "nesting at the limit": '"args": ' + "[" * 100 + "]" * 100,
    "timeout at its limit": '"timeout": 31536000',
}


@pytest.mark.parametrize("case", TAKEN)
def test_values_at_the_edges_are_taken_run_and_shown(client, token, case):
    response = send(client, token, "{" + f'"task": "{ANYTHING}", ' + TAKEN[case] + "}")
    assert response.status_code == 201, response.content
    drain_everything()
    shown = client.get(response["Location"], headers={"Authorization": f"Bearer {token}"})
    # Due later than any now a drain takes (limits.LATEST_NOW): it waits, shown as any job.
    waiting = "last instant" in case
    assert shown.status_code == 200
    assert shown.json()["state"] == ("scheduled" if waiting else "completed")


BODIES = st.fixed_dictionaries(
    {"task": st.one_of(st.just(ANYTHING), st.just(ANYTHING), TEXT)},
    optional={
        "args": st.one_of(st.lists(JSON, max_size=3), JSON),
        "kwargs": st.one_of(st.dictionaries(TEXT, JSON, max_size=3), JSON),
        "run_at": st.one_of(
            st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(
                lambda moment: moment.isoformat()
            ),
            TEXT,
            JSON,
        ),
        "timeout": JSON,
        "priority": JSON,
        "max_attempts": JSON,
        "unique_key": st.one_of(TEXT, JSON),
        "queue": st.one_of(st.sampled_from(["default", "mail", "nowhere"]), TEXT),
    },
)


def body_text(fields: dict[str, Any]) -> str:
    """``fields`` as JSON text, integers of any length written out (as a client may)."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json.dumps(fields)
    finally:
        sys.set_int_max_str_digits(limit)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=BODIES)
def test_any_body_is_refused_with_a_4xx_or_runs(client, token, fields):
    """For any JSON body: a 4xx with a JSON error and nothing written, or a job that
    a worker runs and the API shows."""
    with transaction.atomic():
        response = send(client, token, body_text(fields))
        if response.status_code in (200, 201):
            event("taken")
            drain_everything()
            assert set(Job.objects.values_list("state", flat=True)) == {"completed"}
            shown = client.get(response["Location"], headers={"Authorization": f"Bearer {token}"})
            assert shown.status_code == 200
        else:
            assert 400 <= response.status_code < 500, response.content
            answer = response.json()
            event(f"{response.status_code} on {sorted(answer.get('fields', {'-': ''}))}")
            assert answer["message"]
            assert not Job.objects.exists()
        transaction.set_rollback(True)
