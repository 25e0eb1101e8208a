"""Secrets never leave in any form: a canary sweep of every surface.

A secret is planted in connectors (an http password and token, a command's
environment). Jobs then make it come back the ways servers and libraries echo
secrets: raw, URL-encoded, in base64 at every alignment (``Authorization: Basic
<base64 of user:password>``), in hex, escaped in JSON, in errors and in results, through
the job's own connector and through one the task loads itself. Every surface is
then searched for the canary in each of those forms, decoding what looks like
base64 or URL-encoding on its own (not with the redaction's code), and undoing the
escapes of other languages' encoders (``unescaped``): the job rows,
the API's answers, the admin's pages and messages, the events channel, the
worker's log and a ``pg_dump`` of the database.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import html as pyhtml
import json
import logging
import os
import re
import shutil
import socketserver
import subprocess
import threading
import urllib.parse
import warnings
from collections.abc import Iterator

import django
import psycopg
import pytest
from django.db import connection
from django.test import Client

from django_pgjobs import Job, db
from django_pgjobs.api.tokens import issue
from django_pgjobs.events import EVENTS_CHANNEL
from django_pgjobs.redaction import Redactor, encoded_forms, mask_credentials
from tests.admin_helpers import action
from tests.factories import ConnectorFactory

CANARY = "Cnry-7f3e/9+a=b&c?d é"
USER = "mallory"
CALL = "django_pgjobs.connectors.tasks.call"


def leaks(text: str, secret: str = CANARY) -> list[str]:
    """How ``secret`` can be read out of ``text``, or out of ``text`` with an escaping
    undone (``unescaped``): as it is, URL-decoded, JSON-decoded, from any run of
    base64 characters, decoded at each of its four offsets, or from any run of hex
    digits, at each of its two."""
    found = []
    for how, view in unescaped(text).items():
        found += [f"{how}: {form}" if how else form for form in _leaks(view, secret)]
    return sorted(set(found))


def unescaped(text: str) -> dict[str, str]:
    """``text``, and ``text`` with each escaping undone that servers in other languages
    add (Go's and PHP's JSON, a JSON string in another, HTML, Python's repr, a URL in a
    URL's query string), by name; and each of them after a JSON string's escapes are
    undone (the API's answers, a dump of job rows), and with lines joined (base64
    wrapped at 76 columns, a long line wrapped)."""
    views = {}
    for outer, layer in (("", text), ("json, ", _json_unescaped(text))):
        for joined, lines in (("", layer), ("joined, ", re.sub(r"\r?\n[ \t]*", "", layer))):
            for name, view in _unescaped_once(lines).items():
                views[f"{outer}{joined}{name}"] = view
    return views


def _unescaped_once(text: str) -> dict[str, str]:
    views = {
        "": text,
        "html": pyhtml.unescape(text),
        "json": _json_unescaped(text),
        "url twice": urllib.parse.unquote(urllib.parse.unquote(text)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "\/" is no Python escape
        with contextlib.suppress(ValueError):  # a backslash that starts no escape
            views["repr of bytes"] = codecs.escape_decode(text.encode())[0].decode(errors="replace")
        with contextlib.suppress(UnicodeDecodeError):
            views["repr"] = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    return views


def _json_unescaped(text: str) -> str:
    plain = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
    return re.sub(
        r"\\(u[0-9a-fA-F]{4}|.)",
        lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5 else plain.get(m[1], m[1]),
        text,
    )


def _leaks(text: str, secret: str) -> list[str]:
    found = []
    if secret in text:
        found.append("raw")
    elif secret.lower() in text.lower():
        found.append("raw, in another case")
    for name, decode in (("url", urllib.parse.unquote), ("url+", urllib.parse.unquote_plus)):
        if secret in decode(text) and secret not in text:
            found.append(name)
    if json.dumps(secret)[1:-1] in text and secret not in text:
        found.append("json")
    needle = secret.encode()
    for run in re.findall(r"[A-Za-z0-9+/_-]{6,}", text):
        for offset in range(4):
            chunk = run[offset:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            for altchars in (b"+/", b"-_"):
                try:
                    decoded = base64.b64decode(chunk, altchars=altchars)
                except (binascii.Error, ValueError):
                    continue
                if needle in decoded or needle[:12] in decoded:
                    found.append(f"base64 {run[:40]}")
    for run in re.findall(r"[0-9A-Fa-f]{8,}", text):
        for offset in range(2):
            chunk = run[offset:]
            decoded = bytes.fromhex(chunk[: len(chunk) - len(chunk) % 2])
            if needle in decoded or needle[:12] in decoded:
                found.append(f"hex {run[:40]}")
    return found


def test_the_oracle_finds_each_form_the_jobs_echo():
    from tests.tasks_for_connectors import echoes

    for form in echoes({"password": CANARY}).split(" | "):
        assert leaks(form), form


def test_a_redactor_masks_every_form_and_credentials_of_others():
    from tests.tasks_for_connectors import echoes

    echoed = echoes({"password": CANARY})
    assert leaks(echoed)
    assert leaks(Redactor([CANARY]).text(echoed)) == []
    basic = base64.b64encode(b"someone:other-password").decode()
    assert mask_credentials(f"Authorization: Basic {basic}") == "Authorization: Basic ********"
    assert mask_credentials("Authorization: Bearer abcdef0123456789") == (
        "Authorization: Bearer ********"
    )
    # Words are not credentials.
    assert mask_credentials("Basic setup; Bearer token expired") == (
        "Basic setup; Bearer token expired"
    )
    assert all(len(form) >= 4 for form in encoded_forms("abcd"))


def test_redacting_a_value_masks_keys_and_any_depth():
    deep: object = CANARY
    for _ in range(5000):
        deep = [deep]
    masked = Redactor([CANARY]).value({CANARY: [deep, {"x": CANARY}], "n": 1})
    assert list(masked) == ["********", "n"] and masked["n"] == 1
    inner, other = masked["********"]
    assert other == {"x": "********"}
    for _ in range(5000):
        (inner,) = inner
    assert inner == "********"


# -- the canary sweep -----------------------------------------------------------------------


@pytest.fixture
def canary_connectors(transactional_db, http_peer) -> dict[str, str]:
    """Connectors holding the canary; the http peer echoes the credentials it got."""
    basic = base64.b64encode(f"{USER}:{CANARY}".encode()).decode()
    http_peer.status = 500
    http_peer.content_type = "text/plain"
    http_peer.answer = (
        f"denied: Authorization: Basic {basic}; password={urllib.parse.quote(CANARY)}"
    ).encode()
    ConnectorFactory(
        name="basic-hook",
        config={"url": http_peer.url, "username": USER},
        secrets={"password": CANARY},
    )
    ConnectorFactory(name="token-hook", config={"url": http_peer.url}, secrets={"token": CANARY})
    # A webhook whose URL is its key (a Discord one's): the url secret, the key in its path.
    origin = urllib.parse.urljoin(http_peer.url, "/")
    path = f"{urllib.parse.quote(CANARY, safe='')}/sendMessage"
    ConnectorFactory(name="path-hook", config={}, secrets={"url": origin + path})
    script = 'echo "out $CANARY"; printf %s "user:$CANARY" | base64 >&2; exit 3'
    ConnectorFactory(
        name="shell",
        kind="command",
        config={"executable": "sh", "args": ["-c", script]},
        secrets={"CANARY": CANARY},
    )
    return {"basic": basic}


def enqueue_leaky_jobs() -> list[Job]:
    return [
        Job.enqueue(CALL, kwargs={"payload": {"a": 1}}, connector="basic-hook", max_attempts=2),
        Job.enqueue(CALL, kwargs={"payload": {"a": 1}}, connector="token-hook", max_attempts=1),
        Job.enqueue(CALL, kwargs={"payload": {"a": 1}}, connector="path-hook", max_attempts=1),
        Job.enqueue(CALL, kwargs={"payload": {}}, connector="shell", max_attempts=1),
        Job.enqueue("tests.tasks_for_connectors.echo_secrets", args=[True], connector="shell"),
        Job.enqueue("tests.tasks_for_connectors.echo_secrets", args=[False], connector="shell"),
        Job.enqueue("tests.tasks_for_connectors.echo_secrets_of", args=["basic-hook"]),
    ]


@pytest.fixture
def events() -> Iterator[list[str]]:
    """Every payload published on the events channel while the test runs."""
    listener = psycopg.connect(**db.connection_params(), autocommit=True)
    listener.execute(f"LISTEN {EVENTS_CHANNEL}")
    payloads: list[str] = []
    yield payloads
    payloads.extend(n.payload for n in listener.notifies(timeout=1, stop_after=None))
    listener.close()


def pg_dump() -> str:
    settings = connection.settings_dict
    command = [shutil.which("pg_dump") or "pg_dump", "--data-only", "--dbname", settings["NAME"]]
    for option, key in (("--host", "HOST"), ("--port", "PORT"), ("--username", "USER")):
        if settings[key]:
            command += [option, str(settings[key])]
    env = {**os.environ, "PGPASSWORD": settings["PASSWORD"] or ""}
    return subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout


def test_a_planted_secret_leaves_through_no_surface(
    canary_connectors, events, worker_process, admin_client, caplog
):
    caplog.set_level(logging.DEBUG)
    surfaces: dict[str, str] = {}
    api = Client()
    token = issue("canary", ["*"], can_run=True, connectors=["*"])[1]
    bearer = {"Authorization": f"Bearer {token}"}

    # Half of the jobs run in a request (POST /jobs/run), half in a worker process.
    by_api = enqueue_leaky_jobs()
    ran = api.post("/jobs/run?limit=50", headers=bearer)
    assert ran.status_code == 200 and ran.json()["ran"] == len(by_api)
    surfaces["POST /jobs/run"] = ran.content.decode()
    by_worker = enqueue_leaky_jobs()
    worker = worker_process("--burst")
    assert worker.wait(60) == 0
    surfaces["worker log"] = worker.output()

    jobs = list(Job.objects.order_by("pk"))
    assert {job.state for job in jobs} >= {"completed", "discarded", "retryable"}
    assert any("denied" in json.dumps(job.errors) for job in jobs)  # the echo came back
    for job in jobs:
        surfaces[f"job {job.pk} row"] = json.dumps([job.errors, job.result])
        surfaces[f"GET /jobs/{job.pk}"] = api.get(
            f"/jobs/{job.pk}", headers=bearer
        ).content.decode()
        surfaces[f"admin job {job.pk}"] = admin_client.get(
            f"/admin/pgjobs/job/{job.pk}/change/"
        ).content.decode()
    surfaces["admin job list"] = admin_client.get("/admin/pgjobs/job/").content.decode()
    connectors = list(ConnectorFactory._meta.model.objects.all())
    tested = admin_client.post(
        "/admin/pgjobs/connector/", action("test_connection", *connectors), follow=True
    )
    surfaces["admin test connection"] = tested.content.decode()
    for connector in connectors:
        page = admin_client.get(f"/admin/pgjobs/connector/{connector.pk}/change/")
        surfaces[f"admin connector {connector.name}"] = page.content.decode()
    surfaces["in-process log"] = caplog.text
    surfaces["events"] = "\n".join(events)
    surfaces["pg_dump"] = pg_dump()

    found = {name: leaks(text) for name, text in surfaces.items()}
    assert {name: how for name, how in found.items() if how} == {}
    assert len(by_api) + len(by_worker) == len(jobs)


def test_a_trace_span_of_a_failed_job_carries_no_secret(canary_connectors, settings, worker):
    """The span of a failed run records its exception (message, stack trace) masked as
    the stored error is: a tracing backend is one more place a secret could go."""
    pytest.importorskip("opentelemetry.sdk")
    from tests.test_tracing import TRACING, exporter

    settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": [TRACING]}
    exporter.clear()
    jobs = enqueue_leaky_jobs()
    worker.drain()
    spans = [span for span in exporter.get_finished_spans() if span.name.startswith("process")]
    assert len(spans) == len(jobs)
    failed = [span for span in spans if span.attributes["pgjobs.outcome"] == "failed"]
    assert failed and all(span.status.status_code.name == "ERROR" for span in failed)
    recorded = json.dumps(
        [[span.status.description, [dict(e.attributes) for e in span.events]] for span in spans]
    )
    assert "the server said" in recorded and "exception.stacktrace" in recorded
    assert leaks(recorded) == []


def test_a_failed_connector_form_is_reported_without_the_secrets_typed(
    transactional_db, admin_user, settings, mailoutbox
):
    """A request that fails is reported with its POST, in the error mail to ADMINS
    (Django's debug page shows it all, DEBUG being for a developer's machine): the
    secrets box is masked there. The failure is a real one: the table is locked, the
    save times out."""
    settings.DEBUG = False
    # Django 6 takes addresses, and warns of (name, address) pairs; 5.2 takes pairs only.
    settings.ADMINS = ["ops@example.com"] if django.VERSION >= (6,) else [("ops", "ops@x.y")]
    hook = ConnectorFactory(name="hook", config={"url": "http://127.0.0.1:9/hook"})
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    locker = psycopg.connect(**db.connection_params())
    locker.execute("LOCK TABLE pgjobs_connector IN SHARE MODE")  # reads go on, writes wait
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    form = {
        "name": "hook",
        "kind": "http",
        "config": '{"url": "http://127.0.0.1:9/hook"}',
        "secrets": f"password={CANARY}",
    }
    try:
        failed = client.post(f"/admin/pgjobs/connector/{hook.pk}/change/", form)
    finally:
        locker.close()
    assert failed.status_code == 500
    (mail,) = mailoutbox
    report = "\n".join([mail.body, *(str(content) for content, _ in mail.alternatives)])
    assert "lock timeout" in report and "secrets" in report
    assert leaks(report) == [] and leaks(pyhtml.unescape(report)) == []


def _in_json(value: object, **options: object) -> str:
    return json.dumps(value, **options)  # type: ignore[arg-type]


#: How servers in other languages echo a password they refused: each escapes it its way.
ESCAPED_ECHOES = {
    "go json": _in_json({"password": CANARY}, ensure_ascii=False)
    .replace("&", "\\u0026")
    .replace("<", "\\u003c"),
    "php json": _in_json({"password": CANARY}).replace("/", "\\/"),
    "json in json": _in_json({"upstream": _in_json({"password": CANARY})}),
    "html": f"<p>denied: {pyhtml.escape(CANARY)}</p>",
    "python bytes": f"denied: {CANARY.encode()!r}",
    "python ascii": f"denied: {CANARY!a}",
    "url in a url": "see /login?next="
    + urllib.parse.quote(f"/hook?password={urllib.parse.quote(CANARY, safe='')}", safe=""),
    "base64 of json": base64.b64encode(_in_json({"password": CANARY}).encode()).decode(),
}


@pytest.mark.parametrize("status", [500, 200])
@pytest.mark.parametrize("echo", ESCAPED_ECHOES, ids=str)
def test_a_secret_escaped_the_way_a_server_escapes_it_is_masked(http_peer, worker, status, echo):
    """The answer is the job's error (500) or its result (200, as text): the password
    comes back escaped as Go's, PHP's, Python's encoders or an HTML page escape it."""
    assert leaks(ESCAPED_ECHOES[echo])  # the oracle reads it
    http_peer.status, http_peer.content_type = status, "text/plain"
    http_peer.answer = f"refused: {ESCAPED_ECHOES[echo]}".encode()
    ConnectorFactory(
        name="hook", config={"url": http_peer.url, "username": USER}, secrets={"password": CANARY}
    )
    job = Job.enqueue(CALL, kwargs={"payload": {}}, connector="hook", max_attempts=1)
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps([job.errors, job.result])
    assert "refused" in stored
    assert leaks(stored) == []


#: Long enough that its base64 (after "user:") is wrapped by ``base64`` at 76 columns.
LONG = f"{CANARY}-{CANARY}-{CANARY}"


@pytest.mark.parametrize(
    "script",
    [
        'printf %s "user:$LONG" | base64 >&2; exit 3',  # 76 columns a line
        'printf %s "$LONG" | fold -w 20 >&2; exit 3',
        'printf "%s\\n" "$LONG" | base64 -w 0 | fold -w 12; printf "%s" "$LONG" | base64',
    ],
    ids=["base64 wraps", "a wrapped line", "split anywhere"],
)
def test_a_secret_split_across_lines_is_masked(worker, script):
    """A program's output, the job's error (exit 3) or result: the secret, or its
    base64, comes back wrapped over several lines."""
    ConnectorFactory(
        name="shell",
        kind="command",
        config={"executable": "sh", "args": ["-c", script]},
        secrets={"LONG": LONG},
    )
    job = Job.enqueue(CALL, kwargs={"payload": {}}, connector="shell", max_attempts=1)
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps([job.errors, job.result])
    assert "\\n" in stored  # what it printed came back, over several lines
    assert leaks(stored, LONG) == []


@pytest.mark.parametrize("case", [str.upper, str.lower], ids=["upper", "lower"])
def test_a_secret_in_another_case_is_masked(http_peer, worker, case):
    """A server that shouts its refusal echoes the key upper-cased (one that compares
    keys without case may echo it lower-cased): the job's error."""
    http_peer.status, http_peer.content_type = 403, "text/plain"
    http_peer.answer = case(f"invalid api key {CANARY}").encode()
    ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"api_key": CANARY})
    job = Job.enqueue(CALL, kwargs={"payload": {}}, connector="hook", max_attempts=1)
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps(job.errors)
    assert "api key" in stored.lower() and "403" in stored
    assert leaks(stored) == []


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_worker_log_at_its_most_verbose_carries_no_secret(
    canary_connectors, worker_process, log_format
):
    """``--verbosity 3`` (debugging) in each ``--log-format``, with django-pgjobs's own
    handler (a project that configures no logging): the sweep reads the project's."""
    jobs = enqueue_leaky_jobs()
    worker = worker_process(
        "--burst", "--verbosity", "3", "--log-format", log_format,
        env={"PGJOBS_TEST_NO_LOGGING": "1", "PGJOBS_LOG_LEVEL": "DEBUG"},
    )  # fmt: skip
    assert worker.wait(60) == 0
    output = worker.output()
    assert f"job {jobs[0].pk}" in output or f'"job_id": {jobs[0].pk}' in output
    assert "the server said" in output  # the failures' lines are there
    assert leaks(output) == []


@pytest.mark.parametrize("failure", ["status", "timeout"])
def test_an_http_error_outside_a_job_names_no_secret_of_its_path(db, http_peer, failure):
    """An API that takes its key in the path (a bot's ``/bot<token>/sendMessage``), called
    from a view or a shell, where no job masks the message: ``ConnectorError`` promises
    messages without secrets, and they name the URL's path."""
    from django_pgjobs.connectors import ConnectorError, get_connector

    http_peer.status, http_peer.delay = (500, 0.0) if failure == "status" else (200, 3.0)
    ConnectorFactory(
        name="bot", config={"url": http_peer.url, "timeout": 0.5}, secrets={"token": CANARY}
    )
    bot = get_connector("bot")
    path = f"/bot{urllib.parse.quote(CANARY, safe='')}/sendMessage"
    with pytest.raises(ConnectorError) as failed:
        bot.request({"text": "hi"}, path=path)
    assert "sendMessage" in str(failed.value)
    assert leaks(str(failed.value)) == []


ASCII_CANARY = "Smtp-7f3e/9+a=b&c?d"


class _EchoingSmtp(socketserver.StreamRequestHandler):
    """An SMTP server that refuses every login, quoting what it got: the AUTH argument
    (base64 of the user and password) and the password decoded, as UTF-8 bytes."""

    def handle(self) -> None:
        self.wfile.write(b"220 echo ESMTP\r\n")
        while line := self.rfile.readline(1000):
            command = line.strip().split(b" ")
            verb = command[0].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-echo\r\n250 AUTH PLAIN LOGIN\r\n")
            elif verb == b"AUTH" and command[1].upper() == b"PLAIN" and len(command) > 2:
                password = base64.b64decode(command[2]).split(b"\0")[-1]
                self.refuse(command[2], password)
            elif verb == b"AUTH" and command[1].upper() == b"LOGIN":
                self.wfile.write(b"334 VXNlcm5hbWU6\r\n")
                self.rfile.readline(1000)
                self.wfile.write(b"334 UGFzc3dvcmQ6\r\n")
                answer = self.rfile.readline(1000).strip()
                self.refuse(answer, base64.b64decode(answer))
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not here\r\n")

    def refuse(self, sent: bytes, password: bytes) -> None:
        self.wfile.write(b"535 5.7.8 refused " + sent + b" (password " + password + b")\r\n")


def test_an_smtp_login_refused_with_the_password_quoted_is_masked(transactional_db, admin_client):
    """The admin's Test connection and a job's error: smtplib's exception quotes the
    server's answer (as bytes), which holds the password, raw and in base64. (smtplib
    sends ASCII passwords only.)"""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoingSmtp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mailer = ConnectorFactory(
            name="mailer",
            kind="smtp",
            config={"host": "127.0.0.1", "port": server.server_address[1], "username": USER},
            secrets={"password": ASCII_CANARY},
        )
        page = admin_client.post(
            "/admin/pgjobs/connector/", action("test_connection", mailer), follow=True
        ).content.decode()
        job = Job.enqueue(
            CALL,
            kwargs={"payload": {"subject": "s", "body": "b", "to": "a@example.com"}},
            connector="mailer",
            max_attempts=1,
        )
        from django_pgjobs.worker import Worker

        Worker(concurrency=1).drain()
    finally:
        server.shutdown()
        server.server_close()
    job.refresh_from_db()
    assert "535" in page and "refused" in page
    assert "535" in json.dumps(job.errors)
    assert leaks(pyhtml.unescape(page), ASCII_CANARY) == []
    assert leaks(json.dumps(job.errors), ASCII_CANARY) == []


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgress://sync:{urllib.parse.quote(CANARY, safe='')}@127.0.0.1/other",  # mistyped
        "postgress://sync:P@ss-Cnry-9f2@127.0.0.1/other",  # and an "@" not quoted
    ],
    ids=["scheme mistyped", "an @ in the password"],
)
def test_a_password_in_a_url_of_any_jobs_error_is_masked(worker, dsn):
    """No connector: a task's own DSN, quoted by libpq in the error (and by the
    traceback's source line, were it written there). Every job's error is masked for
    credentials as for Basic and Bearer ones."""
    password = urllib.parse.unquote(urllib.parse.urlsplit(dsn).netloc.rsplit("@", 1)[0])
    password = password.split(":", 1)[1]
    job = Job.enqueue("tests.tasks_for_connectors.connect_to", args=[dsn], max_attempts=1)
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps(job.errors)
    assert "postgress://sync:" in stored  # libpq quoted the DSN
    assert leaks(stored, password) == []


@pytest.mark.parametrize(
    "url",
    [
        f"https://api.example.com/v1/me?access_token={urllib.parse.quote(CANARY, safe='')}",
        f"https://b.s3.example.com/k?X-Amz-Credential=AKIA1&X-Amz-Signature={LONG[:30].encode().hex()}",
        f"https://hooks.example.com/h?x=1&apiKey={urllib.parse.quote(CANARY, safe='')}#top",
    ],
    ids=["access_token", "a presigned URL", "apiKey"],
)
def test_a_token_in_a_urls_query_of_any_jobs_error_is_masked(worker, url):
    """No connector: a task's HTTP library names the URL in its error, as requests does
    ("401 Client Error: Unauthorized for url: ..."), with the token of its query."""
    secret = urllib.parse.unquote(url.rsplit("=", 1)[1].split("#")[0])
    job = Job.enqueue(
        "tests.tasks_for_tests.raises_odd",
        args=[f"401 Client Error: Unauthorized for url: {url}"],
        max_attempts=1,
    )
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps(job.errors)
    assert "Unauthorized for url: https://" in stored
    assert leaks(stored, secret) == []


#: Errors from each character of which a credential rule read on to the end of its run:
#: a run with no "=" after "?" or ";" (minified CSS, a row of placeholders), and a long
#: run of letters and dots in an error that names a URL.
LONG_RUNS = {
    "minified CSS": "a=1 " + "p{margin:0;padding:0}" * 5_000,
    "question marks": "a=1 " + "?" * 100_000,
    "a dotted run beside a URL": "GET https://example.com/ failed: " + "a." * 100_000,
    # A credential's word at each of 100,000 places of one name: 24 KB took 0.5 s.
    "a run of credential words": "a=1 ?" + "key" * 100_000,
}


@pytest.mark.timeout(30)  # each took minutes (the URL: 80 s), hours at 1 MB
@pytest.mark.parametrize("case", LONG_RUNS)
def test_a_long_error_is_masked_in_time_in_proportion_to_its_length(worker, case):
    """Every job's error and traceback are masked whole, before they are cut to size:
    40 KB of ";" or "?" took 80 s, and a worker's thread was stuck for hours on 1 MB."""
    job = Job.enqueue("tests.tasks_for_tests.raises_odd", args=[LONG_RUNS[case]], max_attempts=1)
    assert worker.drain() == {"discarded": 1}
    job.refresh_from_db()
    assert job.errors[0]["error"].startswith("ValueError: ")


def test_query_credentials_are_masked_after_other_parameters_and_through_separators():
    text = "GET https://x/y?a=b;token=abc;def&page=2&X-Amz-Signature=zz#f ?q=1?apiKey=k"
    assert mask_credentials(text) == (
        "GET https://x/y?a=b;token=********&page=2&X-Amz-Signature=********#f ?q=1?apiKey=********"
    )


def test_a_url_in_a_run_that_starts_with_a_dot_or_a_dash_has_its_password_masked():
    # Where a scheme starts is not where its run of scheme characters starts.
    for text in ("see .postgres://app:pw-secret@db/app", "see -postgres://app:pw-secret@db/app"):
        assert mask_credentials(text) == text.replace("pw-secret", "********")


def _error_email_html(raised: BaseException) -> str:
    """What Django's error email shows of ``raised`` with ``include_html`` (DEBUG off):
    each frame of its traceback with its variables, those not marked sensitive. From
    the frame the test called: the test's own (the peer's record of what it received)
    stands for a view's."""
    from django.test import RequestFactory
    from django.views.debug import ExceptionReporter

    called = raised.__traceback__.tb_next
    reporter = ExceptionReporter(
        RequestFactory().get("/"), type(raised), raised, called, is_email=True
    )
    return reporter.get_traceback_html()


def test_an_http_call_failing_in_a_view_shows_no_secret_among_its_frames_variables(
    db, http_peer, settings
):
    """A view calling a connector (no job to mask anything): the request's frame held
    the headers it sent, Authorization among them, which an HTML error email lists."""
    from django_pgjobs.connectors import ConnectorError, get_connector

    settings.DEBUG = False
    http_peer.status = 500
    ConnectorFactory(name="token-hook", config={"url": http_peer.url}, secrets={"token": CANARY})
    with pytest.raises(ConnectorError) as failed:
        get_connector("token-hook").request({"text": "hi"})
    html = _error_email_html(failed.value)
    assert "sensitive_variables_wrapper" in html  # the connector's frames are in it
    assert leaks(html) == []


def test_a_command_failing_to_start_in_a_view_shows_no_secret_among_its_frames_variables(
    db, settings, tmp_path
):
    """Popen's own frames hold the environment it was given: the secrets."""
    from django_pgjobs.connectors import get_connector

    settings.DEBUG = False
    script = tmp_path / "broken"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    ConnectorFactory(
        name="broken", kind="command", config={"executable": str(script)}, secrets={"KEY": CANARY}
    )
    with pytest.raises(OSError) as failed:
        get_connector("broken").run()
    html = _error_email_html(failed.value)
    assert "_execute_child" in html  # subprocess's frames are in it
    assert leaks(html) == []
