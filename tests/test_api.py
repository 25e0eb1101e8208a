"""The HTTP API: POST /jobs, GET /jobs/<id>, POST /jobs/run — and every way to be refused."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_pgjobs import Job
from django_pgjobs.api.tokens import digest, issue
from django_pgjobs.models import ApiToken, WorkerProcess
from django_pgjobs.states import JobState
from testproject.demo.models import Run
from tests.conftest import on_another_connection
from tests.factories import ConnectorFactory, JobFactory, QueueFactory

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"


@pytest.fixture
def token() -> str:
    return issue("ci", ["*"], can_run=True, connectors=["*"])[1]


def post(client: Client, path: str, body: object = None, token: str | None = None, **extra):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json", headers=headers, **extra)


def get(client: Client, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers)


# -- tokens -----------------------------------------------------------------------------


def test_tokens_are_stored_as_a_hash_and_recognisable_by_their_prefix():
    row, plain = issue("deploy", ["default"])
    stored = ApiToken.objects.filter(pk=row.pk).values().get()
    assert plain not in json.dumps(stored, default=str)
    assert stored["token_hash"] == digest(plain) and plain.startswith(stored["prefix"])


@pytest.mark.parametrize(
    "method, path",
    [("post", "/jobs"), ("post", "/jobs/"), ("get", "/jobs/1"), ("post", "/jobs/run")],
)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer pgj_wrong", "Token {token}", "{token}"]
)
def test_a_missing_or_wrong_token_is_401_and_changes_nothing(
    client, token, method, path, authorization
):
    job = JobFactory()
    headers = {"Authorization": authorization.format(token=token)} if authorization else {}
    body = json.dumps({"task": ADD, "args": [1, 2]})
    if method == "post":
        response = client.post(path, body, content_type="application/json", headers=headers)
    else:
        response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"
    assert list(Job.objects.values_list("pk", "state")) == [(job.pk, JobState.AVAILABLE)]
    assert ApiToken.objects.get().last_used_at is None


def test_revoked_and_expired_tokens_are_401(client):
    revoked, revoked_plain = issue("old", ["*"])
    ApiToken.objects.filter(pk=revoked.pk).update(active=False)
    _, expired = issue("temp", ["*"], expires_at=timezone.now() - timedelta(seconds=1))
    for plain, reason in ((revoked_plain, "revoked"), (expired, "expired")):
        response = post(Client(), "/jobs", {"task": ADD}, plain)
        assert response.status_code == 401 and reason in response.json()["message"]
    assert not Job.objects.exists()


def test_a_valid_token_records_when_it_was_last_used(client, token):
    assert post(client, "/jobs", {"task": ADD, "args": [1, 2]}, token).status_code == 201
    assert ApiToken.objects.get().last_used_at is not None


@pytest.mark.parametrize(
    "permission, method, path",
    [
        ("can_enqueue", "post", "/jobs"),
        ("can_read", "get", "/jobs/1"),
        ("can_run", "post", "/jobs/run"),
    ],
)
def test_a_token_without_the_permission_is_403(client, permission, method, path):
    _, plain = issue("narrow", ["*"], **{permission: False})
    JobFactory(pk=1)
    response = (
        post(client, path, {"task": ADD}, plain) if method == "post" else get(client, path, plain)
    )
    assert response.status_code == 403
    message = response.json()["message"]
    assert permission in message and "admin's API tokens" in message  # how to grant it
    if permission == "can_run":
        assert "issue_api_token --run" in message
    assert Job.objects.get(pk=1).state == JobState.AVAILABLE and Job.objects.count() == 1


# -- the paths of DESIGN.md ------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
def test_post_jobs_without_a_trailing_slash_enqueues_with_append_slash_on(
    client, token, settings, debug
):
    # Django's defaults: a POST to a path that only resolved with a slash would be
    # a body-losing 301, or a RuntimeError under DEBUG.
    settings.APPEND_SLASH, settings.DEBUG = True, debug
    response = post(client, "/jobs", {"task": ADD, "args": [1, 2]}, token)
    assert response.status_code == 201, response.content
    job = Job.objects.get()
    assert (response.json()["id"], job.task, job.args) == (job.pk, ADD, [1, 2])


def test_post_jobs_with_a_trailing_slash_still_enqueues(client, token):
    response = post(client, "/jobs/", {"task": ADD, "args": [1, 2]}, token)
    assert response.status_code == 201, response.content
    job = Job.objects.get()
    assert response.json()["id"] == job.pk and response["Location"] == f"/jobs/{job.pk}"


def test_a_job_is_read_and_run_at_the_designs_paths(client, token):
    job = Job.enqueue(ADD, [1, 2])
    assert get(client, f"/jobs/{job.pk}", token).json()["state"] == "available"
    ran = post(client, "/jobs/run?queue=default&status=available&limit=1", None, token)
    assert ran.status_code == 200 and [j["id"] for j in ran.json()["jobs"]] == [job.pk]
    assert get(client, f"/jobs/{job.pk}", token).json()["state"] == "completed"


def test_the_url_names_reverse_to_the_designs_paths():
    assert [
        reverse("pgjobs:enqueue"),
        reverse("pgjobs:job", args=[7]),
        reverse("pgjobs:run"),
        reverse("pgjobs:openapi"),
    ] == ["/jobs", "/jobs/7", "/jobs/run", "/jobs/openapi.yaml"]


@pytest.mark.urls("tests.urls_under_api")
def test_a_prefix_of_the_project_comes_before_jobs(client, token):
    response = post(client, "/api/jobs", {"task": ADD, "args": [1, 2]}, token)
    assert response.status_code == 201, response.content
    assert response["Location"] == f"/api/jobs/{Job.objects.get().pk}"
    assert get(client, response["Location"], token).json()["state"] == "available"
    assert post(client, "/api/jobs/run", None, token).json()["ran"] == 1


# -- POST /jobs -------------------------------------------------------------------------


def test_enqueue_creates_the_job_and_answers_201_with_where_to_find_it(client, token):
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    response = post(
        client,
        "/jobs",
        {
            "task": ADD,
            "args": [1],
            "kwargs": {"b": 2},
            "queue": "mail",
            "priority": 5,
            "run_at": run_at,
            "max_attempts": 4,
            "timeout": 30,
        },
        token,
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert response["Location"] == f"/jobs/{job.pk}" == body["url"]
    assert (job.task, job.args, job.kwargs, job.queue) == (ADD, [1], {"b": 2}, "mail")
    assert (job.priority, job.max_attempts, job.timeout) == (5, 4, 30.0)
    assert job.state == JobState.SCHEDULED and body["state"] == "scheduled"
    assert body["duplicate"] is False


@pytest.mark.parametrize(
    "given, kept",
    [
        # .NET's round-trip format ("o") writes 7 digits, Go's RFC3339Nano up to 9.
        ("2030-01-01T09:00:00.1234567Z", "2030-01-01T09:00:00.123456Z"),
        ("2030-01-01T09:00:00.999999999+00:00", "2030-01-01T09:00:00.999999Z"),
        # Cut, never rounded up: not a second later (as PostgreSQL rounds a text time).
        ("2030-01-01T08:59:59.9999999Z", "2030-01-01T08:59:59.999999Z"),
    ],
)
def test_a_run_at_finer_than_a_microsecond_is_cut_to_it_and_the_answer_says_so(
    client, token, given, kept
):
    response = post(client, "/jobs", {"task": ADD, "args": [1, 2], "run_at": given}, token)
    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    assert job.run_at == datetime.fromisoformat(kept)
    assert datetime.fromisoformat(response.json()["run_at"]) == job.run_at


def test_enqueue_defaults_come_from_the_task(client, token):
    body = post(
        client, "/jobs", {"task": "testproject.demo.tasks.send_welcome", "args": [7]}, token
    ).json()
    assert (body["queue"], body["max_attempts"], body["state"]) == ("mail", 3, "available")


def test_null_args_and_kwargs_are_none_as_for_job_enqueue(client, token):
    """``null`` is "the default" for every field: no args, no kwargs, as ``None`` is
    for ``Job.enqueue`` and ``enqueue_many``."""
    body = {"task": "tests.tasks_for_tests.takes_anything", "args": None, "kwargs": None}
    answer = post(client, "/jobs", body, token)
    assert answer.status_code == 201
    job = Job.objects.get(pk=answer.json()["id"])
    assert (job.args, job.kwargs) == ([], {})


def test_a_unique_key_held_by_an_active_job_returns_that_job_with_200(client, token):
    first = post(client, "/jobs", {"task": ADD, "args": [1, 2], "unique_key": "k"}, token)
    again = post(client, "/jobs", {"task": ADD, "args": [1, 2], "unique_key": "k"}, token)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    assert Job.objects.count() == 1


def test_an_empty_unique_key_is_no_key_as_for_job_enqueue(client, token):
    """``Job.enqueue(unique_key="")`` is no key (as None is); the API refused ``""``
    with a 400, though its description allows any string: it is no key too."""
    answers = [
        post(client, "/jobs", {"task": ADD, "args": [1, 2], "unique_key": ""}, token)
        for _ in range(2)
    ]
    assert [answer.status_code for answer in answers] == [201, 201], answers[0].content
    assert [answer.json()["duplicate"] for answer in answers] == [False, False]
    assert list(Job.objects.values_list("unique_key", flat=True)) == [None, None]


def test_a_unique_task_called_by_position_or_by_name_is_one_job(client, token):
    task = "tests.tasks_for_tests.unique_report"
    first = post(client, "/jobs", {"task": task, "args": [7]}, token)
    again = post(client, "/jobs", {"task": task, "kwargs": {"report_id": 7}}, token)
    assert (first.status_code, again.status_code) == (201, 200), again.content
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True


def _committed_elsewhere(key: str) -> int:
    """A job of ``key``, enqueued and committed on another connection (a thread's)."""
    return on_another_connection(lambda: Job.enqueue(ADD, [1, 1], unique_key=key).pk)


@pytest.mark.django_db(transaction=True)
def test_a_unique_key_held_out_of_the_requests_sight_is_409_and_writes_nothing(client, token):
    """A request in a REPEATABLE READ transaction (ATOMIC_REQUESTS on such a database,
    say) whose snapshot predates the key's holder: the enqueue raises UniqueKeyConflict,
    which was a 500. It is a 409 saying to retry, nothing written, and the retry (a new
    transaction) returns the holder."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert not Job.objects.exists()  # the snapshot is taken
        holder = _committed_elsewhere("k")
        answer = post(client, "/jobs", {"task": ADD, "args": [1, 2], "unique_key": "k"}, token)
        assert answer.status_code == 409, answer.content
        assert answer.json()["error"] == "conflict"
        assert "unique_key 'k' of queue 'default'" in answer.json()["message"]
        assert "retry" in answer.json()["message"]
        assert not Job.objects.exists()  # nothing written, the transaction usable
    assert list(Job.objects.values_list("pk", flat=True)) == [holder]
    again = post(client, "/jobs", {"task": ADD, "args": [1, 2], "unique_key": "k"}, token)
    assert (again.status_code, again.json()["id"], again.json()["duplicate"]) == (200, holder, True)


@pytest.mark.parametrize(
    "body, field, fragment",
    [
        ("{not json", "body", "not valid JSON"),
        ('{"task": NaN}', "body", "NaN is not valid JSON"),
        ([1, 2], "body", "must be a JSON object"),
        ({}, "task", "is required"),
        ({"task": ADD, "argz": []}, "argz", "unknown field"),
        ({"task": 5}, "task", "non-empty string"),
        ({"task": ADD, "args": {"a": 1}}, "args", "array"),
        ({"task": ADD, "kwargs": [1]}, "kwargs", "object"),
        ({"task": ADD, "priority": "high"}, "priority", "integer"),
        ({"task": ADD, "priority": 40000}, "priority", "between"),
        ({"task": ADD, "priority": True}, "priority", "integer"),
        ({"task": ADD, "max_attempts": 0}, "max_attempts", "between 1"),
        ({"task": ADD, "run_at": "tomorrow"}, "run_at", "ISO 8601"),
        ({"task": ADD, "run_at": "2030-01-01T09:00:00"}, "run_at", "time zone"),
        ({"task": ADD, "timeout": -1}, "timeout", "greater than 0"),
        ({"task": ADD, "unique_key": "x" * 256}, "unique_key", "at most 255"),
        ({"task": "os.system", "args": ["true"]}, "task", "unknown task"),
        ({"task": "nowhere.nothing"}, "task", "unknown task"),
        ({"task": ADD, "queue": "nowhere"}, "queue", "unknown queue"),
        ({"task": ADD, "queue": "bad name"}, "queue", "invalid queue name"),
        ({"task": ADD, "connector": "nowhere"}, "connector", "unknown connector"),
    ],
)
def test_invalid_requests_are_400_naming_the_field_and_write_nothing(
    client, token, body, field, fragment
):
    response = post(client, "/jobs", body, token)
    assert response.status_code == 400, response.content
    payload = response.json()
    assert payload["error"] == "invalid"
    assert fragment in payload["fields"][field], payload
    assert not Job.objects.exists()


def test_a_misspelt_task_is_not_answered_with_the_names_of_registered_ones(client, token):
    """A token's holder learns no task name it did not send: the Python API's "did
    you mean" is for the project's own code."""
    response = post(client, "/jobs", {"task": ADD[:-1], "args": [1, 2]}, token)
    assert response.status_code == 400, response.content
    assert "unknown task" in response.json()["fields"]["task"]
    assert ADD not in response.content.decode()


def test_a_misspelt_queue_or_connector_is_not_answered_with_existing_names(client, token):
    """As for tasks: the Python API's "did you mean 'mail'" names a queue the token's
    holder did not send, on POST /jobs and POST /jobs/run alike."""
    ConnectorFactory(name="mailer")
    response = post(client, "/jobs", {"task": ADD, "args": [1, 2], "connector": "mailr"}, token)
    assert "unknown connector 'mailr'" in response.json()["fields"]["connector"]
    assert "'mailer'" not in response.content.decode()
    for path, body in (
        ("/jobs", {"task": ADD, "args": [1, 2], "queue": "mial"}),
        ("/jobs/run?queue=mial", None),
    ):
        response = post(client, path, body, token)
        assert response.status_code == 400, response.content
        assert "unknown queue 'mial'" in response.json()["fields"]["queue"]
        assert "'mail'" not in response.content.decode()
    assert not Job.objects.exists()


def test_several_bad_fields_are_reported_at_once(client, token):
    response = post(client, "/jobs", {"task": ADD, "priority": "x", "args": 1}, token)
    assert set(response.json()["fields"]) == {"priority", "args"}


def test_a_body_that_is_not_json_is_415(client, token):
    response = client.post("/jobs", {"task": ADD}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 415 and not Job.objects.exists()


@pytest.mark.parametrize("charset", ["latin-1", "ISO-8859-1", "utf-16", "utf-16le", "x-bogus"])
@pytest.mark.parametrize("path", ["/jobs", "/jobs/run"])
def test_a_json_body_declared_in_another_charset_than_utf8_is_415(client, token, charset, path):
    # The charset was ignored: a latin-1 body was read as UTF-8, its "é" a 400 about
    # invalid UTF-8 (or other characters, when its bytes happen to be UTF-8). JSON
    # between systems is UTF-8 (RFC 8259 8.1): another declared charset is refused.
    Job.enqueue(ADD, args=[1, 2])
    sent = {"task": ADD, "args": ["café", 1]} if path == "/jobs" else {"limit": 1}
    body = json.dumps(sent, ensure_ascii=False)
    response = client.generic(  # post() would re-encode the bytes
        "POST",
        path,
        body.encode("utf-16" if "16" in charset else "latin-1"),
        content_type=f"application/json; charset={charset}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 415
    answer = response.json()
    assert answer["error"] == "unsupported_media_type"
    assert "UTF-8" in answer["message"] and charset in answer["message"]
    assert list(Job.objects.values_list("state", flat=True)) == [JobState.AVAILABLE]


@pytest.mark.parametrize("charset", ["", "; charset=utf-8", '; charset="UTF-8"', "; charset=utf8"])
def test_a_json_body_declared_utf8_or_undeclared_is_read(client, token, charset):
    response = client.post(
        "/jobs",
        json.dumps({"task": ADD, "args": ["café", 1]}, ensure_ascii=False).encode(),
        content_type=f"application/json{charset}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201 and response.json()["args"] == ["café", 1]


#: Bodies without a charset that are no UTF-8: json.loads(bytes) guessed UTF-16 and
#: UTF-32 itself (with a BOM or without), and let UTF-8-encoded surrogates through.
NOT_UTF8 = {
    "utf-16": ("utf-16", "UTF-16"),
    "utf-16-le": ("utf-16-le", "UTF-16"),
    "utf-16-be": ("utf-16-be", "UTF-16"),
    "utf-32": ("utf-32", "UTF-32"),
    "utf-32-le": ("utf-32-le", "UTF-32"),
    "utf-32-be": ("utf-32-be", "UTF-32"),
    "latin-1": ("latin-1", "UTF-8"),
    "an encoded surrogate": ("utf-8+surrogate", "UTF-8"),
}


def not_utf8(text: str, encoding: str) -> bytes:
    if encoding == "utf-8+surrogate":  # CESU-8's way: "\ud83d" as three bytes
        return text.replace("café", "caf\ud83d").encode("utf-8", "surrogatepass")
    return text.encode(encoding)


@pytest.mark.parametrize("sent", NOT_UTF8.values(), ids=NOT_UTF8.keys())
@pytest.mark.parametrize("path", ["/jobs", "/jobs/run"])
def test_a_json_body_that_is_not_utf8_is_400_even_without_a_charset(client, token, sent, path):
    # RFC 8259 8.1: JSON between systems is UTF-8. json.loads(bytes) read UTF-16 and
    # UTF-32 too, so a body a proxy or a log reads as garbage enqueued a job or ran some.
    encoding, named = sent
    if path == "/jobs/run" and named == "UTF-8":
        pytest.skip("/jobs/run takes no string where a non-ASCII letter would be read")
    Job.enqueue(ADD, args=[1, 2])
    fields = {"task": ADD, "args": ["café", 1]} if path == "/jobs" else {"limit": 1}
    response = client.generic(  # post() would re-encode the bytes
        "POST",
        path,
        not_utf8(json.dumps(fields, ensure_ascii=False), encoding),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid" and list(answer["fields"]) == ["body"]
    assert "not UTF-8" in answer["fields"]["body"] and named in answer["fields"]["body"]
    assert list(Job.objects.values_list("state", flat=True)) == [JobState.AVAILABLE]


def test_a_utf8_body_after_a_byte_order_mark_is_read(client, token):
    # RFC 8259 8.1 lets a parser ignore a UTF-8 BOM; some clients (.NET, PowerShell,
    # Notepad-saved files sent with curl --data-binary) write one.
    body = json.dumps({"task": ADD, "args": ["café", 1]}, ensure_ascii=False)
    response = post(client, "/jobs", "\ufeff".encode() + body.encode(), token)
    assert response.status_code == 201 and response.json()["args"] == ["café", 1]


def test_an_oversized_payload_is_413_naming_args(client, token, settings):
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": 100}
    response = post(client, "/jobs", {"task": ADD, "args": ["x" * 200, 1]}, token)
    assert response.status_code == 413
    assert "over the limit of 100" in response.json()["fields"]["args"]
    assert not Job.objects.exists()


def test_a_token_may_only_enqueue_into_its_queues(client):
    _, plain = issue("mail-only", ["mail"])
    assert (
        post(client, "/jobs", {"task": ADD, "queue": "mail", "args": [1, 2]}, plain).status_code
        == 201
    )
    refused = post(client, "/jobs", {"task": ADD, "args": [1, 2]}, plain)  # task default: default
    assert refused.status_code == 403 and "'default'" in refused.json()["message"]
    assert "adds it to the token's queues in the admin" in refused.json()["message"]
    assert Job.objects.count() == 1


def test_naming_a_connector_needs_a_token_that_covers_it(client):
    ConnectorFactory(name="deploy", kind="command", config={"executable": "true"})
    ConnectorFactory(name="hook")
    _, plain = issue("hooks-only", ["*"], connectors=["hook"])
    refused = post(client, "/jobs", {"task": ADD, "args": [1, 2], "connector": "deploy"}, plain)
    assert refused.status_code == 403 and "'deploy'" in refused.json()["message"]
    assert "adds it to the token's connectors in the admin" in refused.json()["message"]
    assert not Job.objects.exists()
    allowed = post(client, "/jobs", {"task": ADD, "args": [1, 2], "connector": "hook"}, plain)
    assert allowed.status_code == 201 and allowed.json()["connector"] == "hook"


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("get", "/jobs", "POST"),
        ("get", "/jobs/", "POST"),
        ("head", "/jobs", "POST"),
        ("post", "/jobs/1", "GET, HEAD"),
        ("delete", "/jobs/1", "GET, HEAD"),
        ("get", "/jobs/run", "POST"),
        ("head", "/jobs/run", "POST"),
    ],
)
def test_the_wrong_method_is_405_with_allow(client, token, method, path, allow):
    headers = {"Authorization": f"Bearer {token}"}
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 405 and response["Allow"] == allow


def served_raw(method: str, path: str, token: str | None = None):
    """The view's own response, as a server gets it: the test client drops a HEAD
    answer's body itself, as most servers do, which would hide one sent."""
    from django.test import RequestFactory
    from django.urls import resolve

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = getattr(RequestFactory(), method)(path, headers=headers)
    match = resolve(path)
    return match.func(request, *match.args, **match.kwargs)


@pytest.mark.parametrize("who", ["reader", "no token", "no can_read", "other queue", "no job"])
def test_head_answers_as_get_does_without_a_body(client, token, who):
    # Monitors and load balancers send HEAD: it was a 405 at every route but one.
    job = Job.enqueue(ADD, args=[1, 2], queue="mail")
    path, bearer = f"/jobs/{job.pk}", token
    if who == "no token":
        bearer = None
    elif who == "no can_read":
        bearer = issue("blind", ["*"], can_read=False)[1]
    elif who == "other queue":
        bearer = issue("narrow", ["default"])[1]
    elif who == "no job":
        path = f"/jobs/{job.pk + 1000}"
    got = served_raw("get", path, bearer)
    head = served_raw("head", path, bearer)
    assert head.status_code == got.status_code and got.content
    assert sent(head) == b""
    assert head["Content-Length"] == str(len(got.content))
    assert {k: v for k, v in head.items() if k != "Content-Length"} == {
        k: v for k, v in got.items() if k != "Content-Length"
    }
    # Through Django's middleware too, as a deployment serves it.
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    checked = Client(enforce_csrf_checks=True).head(path, headers=headers)
    assert checked.status_code == got.status_code


def sent(response) -> bytes:
    """The body a WSGI server sends of ``response``: what it iterates."""
    return b"".join(response)


def test_head_of_the_openapi_description_sends_no_body(db):
    got, head = served_raw("get", "/jobs/openapi.yaml"), served_raw("head", "/jobs/openapi.yaml")
    assert head.status_code == 200 and sent(head) == b"" and got.content
    assert head["Content-Length"] == str(len(got.content))
    assert head["Content-Type"] == got["Content-Type"]


@pytest.mark.parametrize("path", ["/jobs/{pk}", "/jobs/{pk0}", "/jobs/openapi.yaml"])
@pytest.mark.parametrize("gzip", ["gzip", ""])
def test_head_sends_the_headers_get_does_behind_gzip_and_conditional_get(
    client, token, settings, monkeypatch, path, gzip
):
    # The view dropped a HEAD's body before the middleware saw it: GZipMiddleware left
    # it alone (no Content-Encoding, no Vary, the plain Content-Length) and
    # ConditionalGetMiddleware, which skips HEAD, gave it no ETag.
    from django.middleware.gzip import GZipMiddleware

    monkeypatch.setattr(GZipMiddleware, "max_random_bytes", 0)  # the same length each time
    settings.MIDDLEWARE = [
        "django.middleware.gzip.GZipMiddleware",
        "django.middleware.http.ConditionalGetMiddleware",
        *settings.MIDDLEWARE,
    ]
    job = Job.enqueue(ADD, args=[1, 2], queue="mail")
    path = path.format(pk=job.pk, pk0=job.pk + 1000)
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": gzip}
    got, head = client.get(path, headers=headers), client.head(path, headers=headers)
    assert got.status_code == head.status_code and got.content and head.content == b""
    assert dict(head.items()) == dict(got.items())
    assert "ETag" in got
    assert got.has_header("Content-Encoding") == (gzip == "gzip" and len(got.content) >= 200)


@pytest.mark.parametrize("path", ["/jobs/{pk}", "/jobs/openapi.yaml"])
@pytest.mark.parametrize("middleware", [True, False])
def test_head_with_a_matching_if_none_match_is_304_as_get_is(
    client, token, settings, path, middleware
):
    # ConditionalGetMiddleware skips HEAD: a HEAD whose ETag matched was a 200, and a
    # GET's 304 needed the middleware, though every answer carries its ETag.
    if middleware:
        settings.MIDDLEWARE = [
            "django.middleware.http.ConditionalGetMiddleware",
            *settings.MIDDLEWARE,
        ]
    job = Job.enqueue(ADD, args=[1, 2], queue="mail")
    path = path.format(pk=job.pk)
    headers = {"Authorization": f"Bearer {token}"}
    etag = client.get(path, headers=headers)["ETag"]
    for method in (client.get, client.head):
        fresh = method(path, headers={**headers, "If-None-Match": etag})
        assert fresh.status_code == 304 and fresh.content == b"" and fresh["ETag"] == etag
        stale = method(path, headers={**headers, "If-None-Match": '"other"'})
        assert stale.status_code == 200 and stale["ETag"] == etag
    Job.objects.filter(pk=job.pk).update(priority=7)  # the job changed: its ETag too
    changed = client.head(path, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == (304 if "openapi" in path else 200)


# -- GET /jobs/<id> -------------------------------------------------------------------


def test_a_job_reads_back_with_state_attempts_errors_and_result(client, token):
    done = JobFactory(completed=True)
    failed = JobFactory(discarded=True)
    body = get(client, f"/jobs/{done.pk}", token).json()
    assert (body["state"], body["result"], body["attempt"]) == ("completed", 3, 1)
    body = get(client, f"/jobs/{failed.pk}", token).json()
    assert body["state"] == "discarded"
    assert [e["attempt"] for e in body["errors"]] == [1, 2, 3]


def test_unknown_jobs_and_jobs_of_other_queues_are_404(client):
    _, plain = issue("mail-only", ["mail"])
    other = JobFactory(queue="default")
    assert get(client, f"/jobs/{other.pk}", plain).status_code == 404
    assert get(client, "/jobs/999999", plain).status_code == 404


def test_api_json_never_contains_a_connector_secret(client, token, http_peer):
    secret = "tok-never-shown-81"
    ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"token": secret})
    http_peer.status, http_peer.answer = 500, f"echo {secret}".encode()
    job_id = post(
        client,
        "/jobs",
        {
            "task": "django_pgjobs.connectors.tasks.call",
            "connector": "hook",
            "kwargs": {"payload": {}},
        },
        token,
    ).json()["id"]
    ran = post(client, "/jobs/run", None, token)
    read = get(client, f"/jobs/{job_id}", token)
    assert ran.json()["outcomes"] == {"retryable": 1}
    assert secret not in ran.content.decode() + read.content.decode()
    assert read.json()["connector"] == "hook"


# -- POST /jobs/run -------------------------------------------------------------------


def test_run_executes_due_jobs_and_reports_each_outcome(client, token):
    ok = Job.enqueue(ADD, [1, 2])
    bad = Job.enqueue(ADD, ["x", 1], max_attempts=1)
    later = Job.enqueue(ADD, [1, 1], run_at=timezone.now() + timedelta(hours=1))
    response = post(client, "/jobs/run", None, token)
    assert response.status_code == 200
    report = response.json()
    assert (report["ran"], report["stopped"]) == (2, "empty")
    assert report["outcomes"] == {"completed": 1, "discarded": 1}
    assert {job["id"]: job["outcome"] for job in report["jobs"]} == {
        ok.pk: "completed",
        bad.pk: "discarded",
    }
    ended = {job["id"]: (job["state"], job["result"]) for job in report["jobs"]}
    assert ended == {ok.pk: ("completed", 3), bad.pk: ("discarded", None)}
    assert Job.objects.get(pk=ok.pk).result == 3
    assert Job.objects.get(pk=later.pk).state == JobState.SCHEDULED
    assert not WorkerProcess.objects.exists(), "the request's worker row is gone"


@pytest.mark.django_db(transaction=True)
def test_run_answers_each_job_as_it_ended_also_when_it_ran_in_a_process_of_its_own(client):
    """An isolated job's outcome is written by its child process: the answer showed it
    as claimed ("executing", no result, no finished_at)."""
    token = issue("ci", ["*"], can_run=True)[1]
    job = Job.enqueue("tests.tasks_for_tests.isolated_pid")
    report = post(client, "/jobs/run", None, token).json()
    [answer] = report["jobs"]
    assert (answer["id"], answer["outcome"], answer["state"]) == (job.pk, "completed", "completed")
    assert answer["result"] == Job.objects.get(pk=job.pk).result and answer["finished_at"]


def test_run_stops_at_the_limit(client, token):
    Job.enqueue_many([{"task": ADD, "args": [n, n]} for n in range(5)])
    report = post(client, "/jobs/run?limit=2", None, token).json()
    assert (report["ran"], report["stopped"]) == (2, "limit")
    assert Job.objects.filter(state=JobState.AVAILABLE).count() == 3


def test_run_stops_starting_jobs_after_max_seconds(client, token):
    Job.enqueue_many([{"task": "testproject.demo.tasks.sleep", "args": [0.2]} for _ in range(3)])
    report = post(client, "/jobs/run?max_seconds=0.1", None, token).json()
    assert (report["ran"], report["stopped"]) == (1, "time")


def test_run_takes_only_the_queues_and_states_asked_for(client, token):
    mail = Job.enqueue(ADD, [1, 1], queue="mail")
    Job.enqueue(ADD, [2, 2])  # default queue
    retry = JobFactory(retryable=True, run_at=timezone.now() - timedelta(seconds=1))
    report = post(client, "/jobs/run?queue=mail", None, token).json()
    assert [job["id"] for job in report["jobs"]] == [mail.pk]
    report = post(client, "/jobs/run?status=retryable", None, token).json()
    assert [job["id"] for job in report["jobs"]] == [retry.pk]


def test_run_honours_queue_concurrency_held_elsewhere(client, token):
    QueueFactory(name="limited", concurrency=1)
    JobFactory(queue="limited", executing=True)  # a worker somewhere runs one
    waiting = Job.enqueue(ADD, [1, 1], queue="limited")
    assert post(client, "/jobs/run?queue=limited", None, token).json()["ran"] == 0
    assert Job.objects.get(pk=waiting.pk).state == JobState.AVAILABLE


def test_run_honours_paused_queues(client, token):
    QueueFactory(name="held", paused=True)
    Job.enqueue(ADD, [1, 1], queue="held")
    assert post(client, "/jobs/run?queue=held", None, token).json()["ran"] == 0


def test_run_honours_blocking_order_and_a_head_waiting_to_retry(client, token):
    QueueFactory(name="serial", blocking=True)
    head = JobFactory(queue="serial", retryable=True)  # runs again in 5 minutes
    second = Job.enqueue(ADD, [1, 1], queue="serial")
    assert post(client, "/jobs/run?queue=serial", None, token).json()["ran"] == 0
    Job.objects.filter(pk=head.pk).update(run_at=timezone.now())
    report = post(client, "/jobs/run?queue=serial", None, token).json()
    assert [job["id"] for job in report["jobs"]] == [head.pk, second.pk]


def test_run_interrupts_a_sync_job_past_its_timeout(client, token):
    job = Job.enqueue("tests.tasks_for_tests.busy", args=[30], timeout=0.2, max_attempts=1)
    report = post(client, "/jobs/run", None, token).json()
    assert report["outcomes"] == {"discarded": 1}
    assert "JobTimeout" in Job.objects.get(pk=job.pk).errors[0]["error"]


def test_run_puts_back_a_job_whose_connector_is_busy(client, token):
    from tests.test_connector_concurrency import occupy

    hook = ConnectorFactory(name="hook", concurrency=1)
    occupy(hook)
    job = Job.enqueue("django_pgjobs.connectors.tasks.call", connector="hook")
    report = post(client, "/jobs/run", None, token).json()
    assert report["outcomes"] == {"scheduled": 1}
    job.refresh_from_db()
    assert (job.state, job.attempt) == (JobState.SCHEDULED, 0)


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("limit=1000", "limit"),
        ("max_seconds=-1", "max_seconds"),
        ("max_seconds=nan", "max_seconds"),
        ("status=completed", "status"),
        ("queue=nowhere", "queue"),
        ("queue=", "queue"),
        ("queue=default,,default", "queue"),
        ("queue=default,", "queue"),
        ("status=", "status"),
        ("queues=default", "queues"),
    ],
)
def test_bad_run_parameters_are_400_and_run_nothing(client, token, query, field):
    job = Job.enqueue(ADD, [1, 1])
    response = post(client, f"/jobs/run?{query}", None, token)
    assert response.status_code == 400 and field in response.json()["fields"]
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


@pytest.mark.parametrize("body", [{"queue": ""}, {"queue": ["default", ""]}, {"queue": []}])
def test_empty_queue_names_in_a_run_body_are_400_and_run_nothing(client, token, body):
    # They were dropped silently: "" or [] ran every queue of the token.
    job = Job.enqueue(ADD, [1, 1])
    response = post(client, "/jobs/run", body, token)
    assert response.status_code == 400 and "queue" in response.json()["fields"]
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


@pytest.mark.parametrize(
    "query, body, field",
    [
        ("queue=default,default", None, "queue"),
        ("queue=default,%20default", None, "queue"),
        ("status=available,scheduled,available", None, "status"),
        ("", {"queue": ["default", "default"]}, "queue"),
        ("", {"queue": "default,default"}, "queue"),
        ("", {"status": ["retryable", " retryable"]}, "status"),
    ],
)
def test_a_name_given_twice_in_a_run_list_is_400_and_runs_nothing(
    client, token, query, body, field
):
    # Taken as given, as a parameter given twice or a key twice in a body is not.
    job = Job.enqueue(ADD, [1, 1])
    response = post(client, f"/jobs/run?{query}", body, token)
    assert response.status_code == 400, response.content
    given = "default" if field == "queue" else "available" if query else "retryable"
    assert response.json()["fields"] == {field: f"names {given!r} twice: give each name once"}
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


def test_a_token_runs_only_its_queues(client):
    _, plain = issue("mail-runner", ["mail"], can_run=True)
    mail = Job.enqueue(ADD, [1, 1], queue="mail")
    other = Job.enqueue(ADD, [1, 1])
    refused = post(client, "/jobs/run?queue=default", None, plain)
    assert refused.status_code == 403
    assert "adds it to the token's queues in the admin" in refused.json()["message"]
    report = post(client, "/jobs/run", None, plain).json()  # default: the token's queues
    assert [job["id"] for job in report["jobs"]] == [mail.pk]
    assert Job.objects.get(pk=other.pk).state == JobState.AVAILABLE


@pytest.mark.django_db(transaction=True)
def test_concurrent_run_requests_keep_a_blocking_queue_serial(token):
    Job.enqueue_many(
        [{"task": "testproject.demo.tasks.serial_step", "args": [f"s{n}", 0.05]} for n in range(6)]
    )
    statuses: list[int] = []

    def call() -> None:
        try:
            response = post(Client(), "/jobs/run?queue=serial&limit=6", None, token)
            statuses.append(response.status_code)
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200, 200, 200]
    tags = list(Run.objects.order_by("id").values_list("tag", flat=True))
    assert tags == [tag for n in range(6) for tag in (f"s{n}", f"s{n}:end")]


# -- the description -------------------------------------------------------------------


def test_the_openapi_description_is_served_valid_and_covers_every_route(client):
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    response = client.get("/jobs/openapi.yaml")
    assert response.status_code == 200 and response["Content-Type"] == "application/yaml"
    from django_pgjobs.api.openapi import OPENAPI

    spec, _ = read_from_filename(str(OPENAPI))
    validate(spec)
    assert set(spec["paths"]) == {"/jobs", "/jobs/{id}", "/jobs/run"}
    # Each route's methods as it answers them: a GET route answers HEAD too.
    methods = {path: set(route) - {"parameters"} for path, route in spec["paths"].items()}
    assert methods == {"/jobs": {"post"}, "/jobs/{id}": {"get", "head"}, "/jobs/run": {"post"}}
    codes = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    assert codes >= {"invalid", "unauthorized", "forbidden", "not_found", "method_not_allowed"}


def test_the_openapi_description_answers_get_and_head_only(db):
    # As a deployment runs it: CsrfViewMiddleware answered every other method with
    # its 403 page, not the API's 405 (the test client skips that check by default).
    client = Client(enforce_csrf_checks=True)
    assert client.head("/jobs/openapi.yaml").status_code == 200
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/jobs/openapi.yaml")
        assert response.status_code == 405, method
        assert response.json()["error"] == "method_not_allowed"
        assert response["Allow"] == "GET, HEAD"


def test_issue_api_token_prints_a_working_token(client):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command("issue_api_token", "deploy", "--queues", "mail", "--run", stdout=out)
    plain = out.getvalue().strip()
    token = ApiToken.objects.get(name="deploy")
    assert (token.token_hash, token.queues, token.can_run) == (digest(plain), ["mail"], True)
    assert get(client, "/jobs/1", plain).status_code == 404  # authenticated, no such job
    with pytest.raises(CommandError, match="--queues"):
        call_command("issue_api_token", "x", "--queues", "bad name")
    assert ApiToken.objects.count() == 1


def test_issue_api_token_warns_of_a_queue_or_connector_that_does_not_exist(client):
    """A typo (--queues mial) made a token that every request for 'mail' was refused
    with, and nothing said so when it was made. It is still made (a queue may be
    created later), with a warning on stderr; stdout holds the token alone."""
    import io

    from django.core.management import call_command

    ConnectorFactory(name="slack")
    QueueFactory(name="late")
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "issue_api_token",
        "ci",
        "--queues",
        "mial,late,default",
        "--connectors",
        "slakc,slack",
        stdout=out,
        stderr=err,
    )
    plain = out.getvalue().strip()
    assert ApiToken.objects.get(name="ci").token_hash == digest(plain)
    said = err.getvalue()
    assert "no queue is called 'mial' (did you mean 'mail'?)" in said
    assert "no connector is called 'slakc' (did you mean 'slack'?)" in said
    assert (
        "'late'" not in said
        and "'default'" not in said
        and "'slack'" not in said.replace("'slack'?", "")
    )

    err = io.StringIO()
    call_command("issue_api_token", "all", "--queues", "*", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""

    err = io.StringIO()  # a difflib pass each: the first five, then how many more
    many = ",".join(f"q{n}" for n in range(7))
    call_command("issue_api_token", "many", "--queues", many, stdout=io.StringIO(), stderr=err)
    lines = err.getvalue().splitlines()
    assert len(lines) == 6 and lines[4].startswith("warning: no queue is called 'q4'")
    assert lines[5] == "warning: and 2 more queue name(s) no queue has"


def test_a_token_expires_in_local_time_without_time_zone_support(client, settings):
    """USE_TZ = False: issue_api_token --expires-in-days and issue() with a naive time
    (TIME_ZONE's local time, as the ORM stores it) work; an aware one is stored local."""
    import io

    from django.core.management import call_command

    settings.USE_TZ, settings.TIME_ZONE = False, "Asia/Tokyo"
    out = io.StringIO()
    call_command("issue_api_token", "week", "--queues", "*", "--expires-in-days", "7", stdout=out)
    token = ApiToken.objects.get(name="week")
    assert timezone.is_naive(token.expires_at)
    assert abs(token.expires_at - timezone.now() - timedelta(days=7)) < timedelta(minutes=1)
    assert get(client, "/jobs/1", out.getvalue().strip()).status_code == 404  # authenticated
    aware = timezone.make_aware(timezone.now(), timezone.get_default_timezone())
    later, _ = issue("aware", ["*"], expires_at=aware + timedelta(days=1))
    assert later.expires_at == (aware + timedelta(days=1)).replace(tzinfo=None)
