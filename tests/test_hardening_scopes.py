"""Scopes hold through every path of the HTTP API: a token scoped to some queues never
reads, runs, squats or learns of a job of another queue (issue 16, item 4).

Every route of django_pgjobs.urls has a case below, with two tokens of disjoint scope;
a route added without one fails ``test_every_route_has_a_scope_case``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import URLPattern

from django_pgjobs import Job, urls
from django_pgjobs.api.tokens import issue
from django_pgjobs.states import JobState

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"


@pytest.fixture
def tokens() -> tuple[str, str]:
    """(a token for queue 'default' only, a token for queue 'mail' only)."""
    default = issue("default-only", ["default"], can_run=True)[1]
    mail = issue("mail-only", ["mail"], can_run=True)[1]
    return default, mail


def post(client: Client, path: str, body: object, token: str):
    return client.post(
        path,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def get(client: Client, path: str, token: str):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def snapshot() -> list[tuple]:
    return list(Job.objects.order_by("id").values_list("id", "state", "queue", "attempt"))


def case_enqueue(client: Client, tokens: tuple[str, str]) -> None:
    """The other queue's unique key neither reveals its job nor blocks this queue's."""
    default, mail = tokens
    theirs = Job.enqueue(ADD, args=[1, 1], queue="mail", unique_key="invoice-7")
    held = post(
        client,
        "/jobs",
        {"task": ADD, "args": [1, 2], "queue": "mail", "unique_key": "invoice-7"},
        mail,
    )
    assert held.status_code == 200 and held.json()["id"] == theirs.pk  # its own queue's key
    refused = post(client, "/jobs", {"task": ADD, "args": [1, 2], "queue": "mail"}, default)
    assert refused.status_code == 403 and str(theirs.pk) not in refused.content.decode()
    ours = post(client, "/jobs", {"task": ADD, "args": [2, 2], "unique_key": "invoice-7"}, default)
    # Keys are unique per queue: a job of its own, not theirs, and nothing said of theirs.
    assert ours.status_code == 201, ours.content
    body = ours.json()
    assert body["id"] != theirs.pk and body["duplicate"] is False and body["queue"] == "default"
    assert "mail" not in ours.content.decode()
    again = post(client, "/jobs", {"task": ADD, "args": [3, 3], "unique_key": "invoice-7"}, default)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert Job.objects.get(pk=theirs.pk).args == [1, 1]  # untouched


def case_job(client: Client, tokens: tuple[str, str]) -> None:
    default, mail = tokens
    theirs = Job.enqueue(ADD, args=[1, 1], queue="mail")
    ours = Job.enqueue(ADD, args=[1, 1])
    missing = get(client, f"/jobs/{theirs.pk}", default)
    nonexistent = get(client, "/jobs/99999999", default)
    # Indistinguishable from a job that doesn't exist: same status, same shape.
    assert missing.status_code == nonexistent.status_code == 404
    assert missing.json().keys() == nonexistent.json().keys()
    assert get(client, f"/jobs/{ours.pk}", mail).status_code == 404
    assert get(client, f"/jobs/{ours.pk}", default).status_code == 200


def case_run(client: Client, tokens: tuple[str, str]) -> None:
    default, _ = tokens
    theirs = Job.enqueue(ADD, args=[1, 1], queue="mail")
    ours = Job.enqueue(ADD, args=[2, 2])
    for path in ("/jobs/run?queue=mail", "/jobs/run?queue=default,mail"):
        refused = post(client, path, None, default)
        assert refused.status_code == 403, (path, refused.content)
    ran = post(client, "/jobs/run", None, default)
    assert ran.status_code == 200 and [j["id"] for j in ran.json()["jobs"]] == [ours.pk]
    assert Job.objects.get(pk=theirs.pk).state == JobState.AVAILABLE


def case_openapi(client: Client, tokens: tuple[str, str]) -> None:
    """Public: it describes the API and the registered tasks, never a job or a queue's
    contents."""
    theirs = Job.enqueue(ADD, args=[1, 1], queue="mail", unique_key="secret-key-123")
    document = client.get("/jobs/openapi.yaml").content.decode()
    assert "secret-key-123" not in document and f"/jobs/{theirs.pk}" not in document


CASES: dict[str, Callable[[Client, tuple[str, str]], None]] = {
    "enqueue": case_enqueue,
    "jobs/": case_enqueue,  # the unnamed trailing-slash alias of enqueue
    "job": case_job,
    "run": case_run,
    "openapi": case_openapi,
}


def route_key(pattern: URLPattern) -> str:
    return pattern.name or str(pattern.pattern)


def test_every_route_has_a_scope_case():
    routes = {route_key(p) for p in urls.urlpatterns}
    assert routes == set(CASES), routes ^ set(CASES)


@pytest.mark.parametrize("route", sorted(CASES))
def test_a_token_never_crosses_its_scope(client, tokens, route):
    CASES[route](client, tokens)


@pytest.mark.parametrize(
    "route, method, path",
    [
        ("job", "get", "/jobs/{id}"),
        ("run", "post", "/jobs/run?queue=mail"),
        ("enqueue", "post", "/jobs"),
    ],
)
def test_a_refused_request_writes_nothing(client, tokens, route, method, path):
    default, _ = tokens
    theirs = Job.enqueue(ADD, args=[1, 1], queue="mail")
    before = snapshot()
    url = path.format(id=theirs.pk)
    if method == "get":
        answer = get(client, url, default)
    else:  # /jobs/run reads a JSON body's parameters too: an enqueue's would be a 400
        body = {"task": ADD, "queue": "mail"} if route == "enqueue" else None
        answer = post(client, url, body, default)
    assert answer.status_code in (403, 404)
    assert snapshot() == before
