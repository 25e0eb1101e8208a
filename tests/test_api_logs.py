"""API log records name the token (id and name, never its secret) and the job."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.test import Client

from django_pgjobs import logs
from django_pgjobs.api.tokens import issue

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the django_pgjobs logger prints with --log-format json's handler."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JSONFormatter())
    handler.addFilter(logs.AddFields())
    ours = logging.getLogger("django_pgjobs")
    level = ours.level
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    try:
        yield out
    finally:
        ours.removeHandler(handler)
        ours.setLevel(level)


def test_an_enqueue_record_carries_the_token_and_the_job(json_lines):
    token, secret = issue("deploy-bot", ["*"])
    response = Client().post(
        "/jobs",
        json.dumps({"task": "testproject.demo.tasks.add", "args": [1, 2]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 201, response.content
    printed = json_lines.getvalue()
    assert secret not in printed and token.token_hash not in printed
    line = next(json.loads(x) for x in printed.splitlines() if "api: job" in x)
    assert line["token_id"] == token.pk and line["token_name"] == "deploy-bot"
    assert line["job_id"] == response.json()["id"]
    assert line["task"] == "testproject.demo.tasks.add" and line["queue"] == "default"
    assert logs.request_fields.get() == ()  # nothing left for the next request
