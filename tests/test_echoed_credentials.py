"""A server that echoes the request it refused (its headers, its path and query) into
its answer, which becomes the job's error: every credential the call sent is masked
there, not only the connector's secrets: those a task passed to the one call
(``request(headers=, query=)``) and those of a row saved before the rules refused
them in plain config."""

from __future__ import annotations

import json

import pytest

from django_pgjobs import Job
from django_pgjobs.connectors import ConnectorError, get_connector
from tests.factories import ConnectorFactory, stored_as_before
from tests.peers import HttpPeer, Received
from tests.test_hardening_secrets import leaks

KEY = "Plain-k3y-9f2c/77+x"
TOKEN = "Call-t0ken-4e1a8b"


def _echo(request: Received) -> bytes:
    """The request line and every header it got, as a debugging endpoint (or TRACE)
    answers."""
    headers = "".join(f"{name}: {value}\n" for name, value in request.headers.items())
    return f"denied {request.method} {request.path}\n{headers}\n".encode()


@pytest.fixture
def echo_url(http_peer: HttpPeer) -> str:
    """Answers 401 with the request it refused."""
    http_peer.status, http_peer.content_type, http_peer.answer = 401, "text/plain", _echo
    return http_peer.url


def test_credentials_a_task_passes_to_one_call_are_masked_in_its_error(db, echo_url):
    ConnectorFactory(name="hook", config={"url": echo_url})
    with pytest.raises(ConnectorError) as failed:
        get_connector("hook").request(
            {"a": 1},
            headers={"Authorization": f"Token {TOKEN}", "X-Api-Key": KEY},
            query={"access_token": TOKEN[::-1]},
        )
    message = str(failed.value)
    assert "denied POST" in message and "X-Api-Key" in message, message
    for secret in (TOKEN, KEY, TOKEN[::-1]):
        assert leaks(message, secret) == [], secret


def test_a_plain_credential_of_a_row_saved_before_the_rules_is_masked(worker, echo_url):
    hook = ConnectorFactory(name="hook", config={"url": "http://127.0.0.1:9/"})
    stored_as_before(hook, {"url": f"{echo_url}?api_key={TOKEN}", "headers": {"X-Api-Key": KEY}})
    job = Job.enqueue(
        "django_pgjobs.connectors.tasks.call",
        kwargs={"payload": {"a": 1}},
        connector="hook",
        max_attempts=1,
    )
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps(job.errors)
    assert "denied POST" in stored and "answered 401" in stored, stored
    assert leaks(stored, KEY) == [] and leaks(stored, TOKEN) == []
