"""Each built-in connector kind against a real local peer: an HTTP server, an SMTP
server, a child process."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from django_pgjobs import Job
from django_pgjobs.connectors import ConnectorError, get_connector
from django_pgjobs.connectors.command import running_commands
from django_pgjobs.models import Connector
from django_pgjobs.states import JobState
from tests.factories import ConnectorFactory, QueueFactory, stored_as_before

pytestmark = pytest.mark.django_db

TOKEN = "tok-3f9a1c77e2b54d0a"
CALL = "django_pgjobs.connectors.tasks.call"


def run_one(worker, **enqueue) -> Job:
    job = Job.enqueue(**enqueue)
    worker.drain()
    job.refresh_from_db()
    return job


# -- http -----------------------------------------------------------------------------


def test_http_call_posts_the_payload_as_json_with_the_bearer_token(worker, http_peer):
    ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"token": TOKEN})
    job = run_one(worker, task=CALL, kwargs={"payload": {"order": 7}}, connector="hook")

    assert job.state == JobState.COMPLETED
    assert job.result == {"status": 200, "body": {"ok": True}}
    (request,) = http_peer.received
    assert (request.method, request.path) == ("POST", "/hook")
    assert json.loads(request.body) == {"order": 7}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"


def test_http_basic_auth_api_key_and_plain_headers(worker, http_peer):
    ConnectorFactory(
        name="hook",
        config={"url": http_peer.url, "method": "PUT", "username": "svc", "headers": {"X-A": "1"}},
        secrets={"password": "pw-secret-1", "api_key": "key-secret-1"},
    )
    job = run_one(worker, task=CALL, kwargs={"payload": [1]}, connector="hook")
    assert job.state == JobState.COMPLETED
    (request,) = http_peer.received
    assert request.method == "PUT"
    assert (
        request.headers["Authorization"] == "Basic " + base64.b64encode(b"svc:pw-secret-1").decode()
    )
    assert request.headers["X-Api-Key"] == "key-secret-1"
    assert request.headers["X-A"] == "1"


def test_an_unexpected_status_fails_the_attempt_without_leaking_the_token(worker, http_peer):
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"token": TOKEN})
    stored_as_before(hook, {"url": http_peer.url + "?sig=abc123"})  # refused when saved now
    http_peer.status, http_peer.answer = 503, f"denied for {TOKEN}".encode()
    job = run_one(worker, task=CALL, kwargs={"payload": {}}, connector="hook")

    assert job.state == JobState.RETRYABLE
    error = job.errors[0]["error"]
    assert error.startswith("HttpStatusError: POST http://127.0.0.1:")
    assert "/hook answered 503: denied for ********" in error
    assert TOKEN not in json.dumps(job.errors) and "abc123" not in error


def test_expected_status_decides_what_success_is(worker, http_peer):
    ConnectorFactory(name="hook", config={"url": http_peer.url, "expected_status": [202]})
    assert run_one(worker, task=CALL, connector="hook").state == JobState.RETRYABLE
    http_peer.status = 202
    assert run_one(worker, task=CALL, connector="hook").state == JobState.COMPLETED


def test_changing_url_and_token_in_the_database_applies_to_the_next_job(worker, http_peer):
    hook = ConnectorFactory(name="hook", config={"url": "http://127.0.0.1:9/gone"})
    first = run_one(worker, task=CALL, connector="hook")
    assert first.state == JobState.RETRYABLE
    assert "failed" in first.errors[0]["error"]

    hook.config = {"url": http_peer.url}  # what an operator does in the admin
    hook.update_secrets({"token": "rotated-token-2"})
    hook.save()
    second = run_one(worker, task=CALL, connector="hook")  # same worker, no restart
    assert second.state == JobState.COMPLETED
    assert http_peer.received[0].headers["Authorization"] == "Bearer rotated-token-2"


def test_a_task_with_a_connector_parameter_gets_the_http_connector(worker, http_peer):
    ConnectorFactory(name="hook", config={"url": http_peer.url})
    job = run_one(
        worker, task="tests.tasks_for_connectors.post_to", args=[{"a": 1}], connector="hook"
    )
    assert job.result == {"status": 200, "body": {"ok": True}}


def test_http_connection_test_reports_the_status_without_a_body(http_peer):
    ConnectorFactory(name="hook", config={"url": http_peer.url})
    assert get_connector("hook").test().endswith("answered 200")
    assert http_peer.received[0].method == "HEAD"
    ConnectorFactory(name="nothing-there", config={"url": "http://127.0.0.1:9/"})
    with pytest.raises(ConnectorError, match="refused"):
        get_connector("nothing-there").test()


# -- smtp -----------------------------------------------------------------------------


def mailer(peer, password: str | None = None, **config) -> Connector:
    return ConnectorFactory(
        name="mailer",
        kind="smtp",
        config={
            "host": peer.host,
            "port": peer.port,
            "username": peer.username,
            "from_email": "jobs@example.com",
            **config,
        },
        secrets={"password": password or peer.password},
    )


def test_smtp_sends_through_the_server_with_the_stored_credentials(worker, smtp_peer):
    mailer(smtp_peer)
    from tests.tasks_for_connectors import welcome

    job = welcome.enqueue("ada@example.com")  # the task names the connector
    worker.drain()
    job.refresh_from_db()

    assert (job.state, job.result) == (JobState.COMPLETED, 1)
    assert smtp_peer.logins == [("mailer", True)]
    (message,) = smtp_peer.messages
    assert message["Subject"] == "Welcome"
    assert message["To"] == "ada@example.com"
    assert message["From"] == "jobs@example.com"
    assert {part.get_content_type() for part in message.walk()} >= {"text/plain", "text/html"}


def test_a_wrong_smtp_password_fails_without_showing_it_then_a_new_one_works(
    worker, smtp_peer, caplog
):
    connector = mailer(smtp_peer, password="wrong-password-77")
    job = run_one(
        worker,
        task=CALL,
        kwargs={"payload": {"subject": "s", "body": "b", "to": "x@example.com"}},
        connector="mailer",
    )
    assert job.state == JobState.RETRYABLE
    assert "SMTPAuthenticationError" in job.errors[0]["error"]
    assert "wrong-password-77" not in json.dumps(job.errors) + caplog.text

    connector.update_secrets({"password": smtp_peer.password})
    connector.save()
    job.retry()
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, {"sent": 1, "to": ["x@example.com"]})


@pytest.mark.parametrize("tls", [{"use_tls": True}, {"use_ssl": True}])
def test_a_server_that_refuses_tls_gets_no_login_and_no_mail(worker, smtp_peer, tls):
    """With use_tls a server that offers no STARTTLS (or, with use_ssl, speaks no TLS)
    is not logged in to in plain text: the password would cross the network readable."""
    mailer(smtp_peer, timeout=5, **tls)
    job = run_one(
        worker,
        task=CALL,
        kwargs={"payload": {"subject": "s", "body": "b", "to": "x@example.com"}},
        connector="mailer",
    )
    error = job.errors[0]["error"]
    assert job.state == JobState.RETRYABLE
    assert ("STARTTLS extension not supported" in error) if "use_tls" in tls else "SSL" in error
    assert smtp_peer.logins == [] and smtp_peer.messages == []
    assert smtp_peer.password not in json.dumps(job.errors)
    with pytest.raises(ConnectorError):
        get_connector("mailer").test()
    assert smtp_peer.logins == []


def test_a_malformed_mail_payload_is_discarded_with_the_reason(worker, smtp_peer):
    mailer(smtp_peer)
    job = run_one(worker, task=CALL, kwargs={"payload": {"subject": "s"}}, connector="mailer")
    assert job.state == JobState.DISCARDED
    assert "missing keys ['body', 'to']" in job.errors[0]["error"]
    assert "unknown keys" not in job.errors[0]["error"]  # it said "unknown keys []" too
    assert smtp_peer.messages == []


def test_an_smtp_call_that_fails_names_the_port_it_tried():
    """A config without a port said 'smtp.example.com:default port': which one (25,
    587 with TLS, 465 with SSL) was left to guess."""
    ConnectorFactory(name="mailer", kind="smtp", config={"host": "127.0.0.1", "use_ssl": True})
    with pytest.raises(ConnectorError, match=r"SMTP 127\.0\.0\.1:465: "):
        get_connector("mailer").send_mail("s", "b", to=["ada@example.com"])


#: Payloads no server takes, each once an attempt failed and retried to the end.
UNSENDABLE = {
    "subject with a line break": ({"subject": "a\nBcc: x@example.com"}, "subject"),
    "to with a line break": ({"to": ["a@example.com\nBcc: x@example.com"]}, "to"),
    "from_email with a line break": ({"from_email": "a@example.com\r\nBcc: x"}, "from_email"),
    "no address": ({"to": ["not an address"]}, "to"),
    "non-ASCII local part": ({"to": ["ü@example.com"]}, "to"),
    "two addresses in one": ({"cc": ["a@example.com, b@example.com"]}, "cc"),
    "html no text": ({"html": 5}, "html"),  # was KeyError: 'builtins.int'
}


@pytest.mark.parametrize("odd, field", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_a_mail_payload_no_server_takes_is_discarded_naming_the_field(
    worker, smtp_peer, odd, field
):
    mailer(smtp_peer)
    mail = {"subject": "s", "body": "b", "to": ["a@example.com"], **odd}
    job = run_one(worker, task=CALL, kwargs={"payload": mail}, connector="mailer")
    assert job.state == JobState.DISCARDED and job.attempt == 1
    assert f"bad payload for connector 'mailer': smtp payload: {field}" in job.errors[0]["error"]
    assert smtp_peer.messages == []


def test_smtp_connection_test_logs_in_and_sends_nothing(smtp_peer):
    mailer(smtp_peer)
    assert "logged in as mailer" in get_connector("mailer").test()
    assert smtp_peer.logins == [("mailer", True)] and smtp_peer.messages == []


# -- command --------------------------------------------------------------------------


def command(code: str, name: str = "script", secrets: dict | None = None, **config) -> Connector:
    return ConnectorFactory(
        name=name,
        kind="command",
        config={"executable": sys.executable, "args": ["-c", code], **config},
        secrets=secrets or {},
    )


def test_a_command_s_output_and_exit_code_are_the_result(worker):
    command("import sys; print('out', sys.argv[1:]); print('err', file=sys.stderr)")
    job = run_one(worker, task=CALL, connector="script")
    assert job.state == JobState.COMPLETED
    assert job.result["exit_code"] == 0
    assert job.result["stdout"] == "out []\n" and job.result["stderr"] == "err\n"


def test_a_non_zero_exit_fails_the_attempt_with_stderr(worker):
    command("import sys; print('disk full', file=sys.stderr); sys.exit(3)")
    job = run_one(worker, task=CALL, connector="script")
    assert job.state == JobState.RETRYABLE
    assert job.errors[0]["error"].endswith("exited with code 3: disk full\n")


@pytest.mark.parametrize(
    "payload, said",
    [
        ({"input": 5}, "input must be text"),  # ran with no input, and completed
        ({"input": {"a": 1}}, "input must be text"),
        ({"input": ["x"]}, "input must be text"),
        ({"args": {"a": "b"}}, "args must be a list of strings"),  # ran with the arg "a"
        ({"args": 5}, "args must be a list of strings"),  # "'int' object is not iterable"
        ({"args": "ab"}, "args must be a list of strings"),
    ],
)
def test_a_command_payload_it_cant_use_is_discarded_and_runs_nothing(
    worker, tmp_path, payload, said
):
    ran = tmp_path / "ran"
    command(f"open({str(ran)!r}, 'w').close()", allow_job_args=True, allow_job_input=True)
    job = run_one(worker, task=CALL, kwargs={"payload": payload}, connector="script")
    assert job.state == JobState.DISCARDED and job.attempt == 1, job.errors
    assert said in job.errors[0]["error"]
    assert not ran.exists()


def test_secrets_reach_the_process_as_environment_and_are_masked_in_output(worker):
    command("import os; print(os.environ['DB_PASSWORD'])", secrets={"DB_PASSWORD": "hunter2-x"})
    job = run_one(worker, task=CALL, connector="script")
    assert job.result["stdout"] == "********\n"


def test_jobs_append_arguments_only_where_the_connector_allows_it(worker):
    command("import sys; print(sys.argv[1:])")
    job = run_one(worker, task=CALL, kwargs={"payload": {"args": ["--x"]}}, connector="script")
    assert "does not take arguments from jobs" in job.errors[0]["error"]
    command("import sys; print(sys.argv[1:])", name="open", allow_job_args=True)
    job = run_one(worker, task=CALL, kwargs={"payload": {"args": ["--x"]}}, connector="open")
    assert job.result["stdout"] == "['--x']\n"


def test_input_goes_to_stdin_and_only_the_tail_of_big_output_is_kept(worker):
    code = "import sys; data = sys.stdin.read(); print('x' * 5000 + data)"
    command(code, max_output_bytes=100, allow_job_input=True)
    job = run_one(worker, task=CALL, kwargs={"payload": {"input": "END"}}, connector="script")
    assert job.result["stdout"].endswith("xEND\n") and len(job.result["stdout"]) == 100
    assert job.result["truncated"] is True


def test_a_command_over_its_timeout_is_killed(worker):
    command("import time; time.sleep(30)", timeout=0.3)
    job = run_one(worker, task=CALL, connector="script")
    assert "CommandTimeout" in job.errors[0]["error"]
    assert running_commands() == []


def test_a_missing_executable_is_a_clear_error(worker):
    ConnectorFactory(name="ghost", kind="command", config={"executable": "no-such-tool-xyz"})
    job = run_one(worker, task=CALL, connector="ghost")
    assert "executable 'no-such-tool-xyz' not found" in job.errors[0]["error"]
    with pytest.raises(ConnectorError, match="not found"):
        get_connector("ghost").test()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.django_db(transaction=True)
def test_cancelling_the_job_kills_its_process(threaded_worker, wait, tmp_path: Path):
    pid_file = tmp_path / "pid"
    command(
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    job = Job.enqueue(CALL, connector="script")
    threaded_worker()
    pid = int(wait(lambda: pid_file.exists() and pid_file.read_text(), timeout=10))
    assert [run.pid for run in running_commands()] == [pid]
    Job.objects.get(pk=job.pk).cancel()
    wait(lambda: not pid_alive(pid), timeout=5)
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_running_commands_count_against_their_queue_s_concurrency(threaded_worker, tmp_path):
    QueueFactory(name="scripts", concurrency=1)
    log = tmp_path / "log"
    command(
        "import sys, time; log = open(sys.argv[1], 'a'); log.write(f'start {time.time()}\\n');"
        " log.flush(); time.sleep(0.3); log.write(f'end {time.time()}\\n')",
        allow_job_args=True,
    )
    jobs = [
        Job.enqueue(
            CALL, kwargs={"payload": {"args": [str(log)]}}, connector="script", queue="scripts"
        )
        for _ in range(3)
    ]
    threaded_worker(queues=["scripts"], concurrency=3)
    from tests.conftest import wait_until

    wait_until(lambda: Job.objects.filter(state=JobState.COMPLETED).count() == 3, timeout=15)
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end"] * 3, "processes overlapped"
    assert all(Job.objects.get(pk=job.pk).attempt == 1 for job in jobs)


def recorded(meta) -> dict[str, int]:
    from django_pgjobs.connectors.sent_mail import recorded

    return recorded(meta)


def subjects(peer) -> list[str]:
    return [message["Subject"] for message in peer.messages]


def test_a_send_that_fails_part_way_sends_only_the_rest_when_retried(worker, smtp_peer):
    """The retry sent every message again: the ones the server had accepted went twice."""
    mailer(smtp_peer)
    from tests.tasks_for_connectors import newsletter

    smtp_peer.refuse_once = {"two"}
    job = newsletter.enqueue(["one", "two", "three"])
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.RETRYABLE
    assert subjects(smtp_peer) == ["one"]
    assert job.errors[0]["error"] == (
        f"SmtpPartlySent: SMTP 127.0.0.1:{smtp_peer.port}: SMTPDataError(451, b'4.3.0 try "
        "again later') (after 1 of 3 messages were accepted; a retry of this job sends only "
        "the others)"
    )
    assert list(job.meta["smtp_sent"].values()) == [1]

    job.retry()
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, 3)
    assert subjects(smtp_peer) == ["one", "two", "three"]
    assert sorted(job.meta["smtp_sent"].values()) == [1, 1, 1]


@pytest.mark.parametrize("how", ["retry", "retry_many"])
def test_an_operator_s_retry_of_a_completed_job_sends_its_mail_again(worker, smtp_peer, how):
    """A completed job runs again whole: a re-run of a "send the welcome mail" job sent
    nothing (every message was in its smtp_sent), and said so only at INFO."""
    from django_pgjobs import transitions
    from tests.tasks_for_connectors import newsletter

    mailer(smtp_peer)
    job = newsletter.enqueue(["one", "two"])
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.COMPLETED and len(recorded(job.meta)) == 2
    if how == "retry":
        job.retry()
    else:
        assert transitions.retry_many(Job.objects.filter(pk=job.pk), include_completed=True) == 1
    job.refresh_from_db()
    assert "smtp_sent" not in job.meta
    worker.drain()
    assert subjects(smtp_peer) == ["one", "two", "one", "two"]


def test_a_mail_sent_before_the_task_failed_is_not_sent_by_its_retry(worker, smtp_peer, caplog):
    mailer(smtp_peer)
    from tests.tasks_for_connectors import mail_then_fail_once

    job = mail_then_fail_once.enqueue("ada@example.com")
    worker.drain()
    job.retry()
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, 1)
    assert subjects(smtp_peer) == ["Receipt"]
    assert f"job {job.pk}: 1 of 1 messages were sent by an earlier attempt" in caplog.text


def test_a_message_sent_twice_on_purpose_is_sent_twice_once_across_retries(worker, smtp_peer):
    mailer(smtp_peer)
    from tests.tasks_for_connectors import newsletter

    smtp_peer.refuse_once = {"two"}
    job = newsletter.enqueue(["one", "one", "two", "one"])
    worker.drain()
    assert subjects(smtp_peer) == ["one", "one"]
    job.retry()
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, 4)
    assert subjects(smtp_peer) == ["one", "one", "two", "one"]
    assert sorted(job.meta["smtp_sent"].values()) == [1, 3]


@pytest.mark.parametrize("planted", ["junk", [1], {"x": "y", "z": True}, None])
def test_a_record_of_sent_mail_that_is_no_count_sends_everything(worker, smtp_peer, planted):
    """A row written by hand: its smtp_sent is read as nothing sent, and replaced."""
    mailer(smtp_peer)
    from tests.tasks_for_connectors import newsletter

    job = newsletter.enqueue(["one", "two"])
    Job.objects.filter(pk=job.pk).update(meta={"smtp_sent": planted})
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, 2)
    assert subjects(smtp_peer) == ["one", "two"]
    assert sorted(recorded(job.meta).values()) == [1, 1]


def test_outside_a_job_a_send_failing_part_way_says_how_far_it_went(smtp_peer):
    from django.core.mail import EmailMessage

    from django_pgjobs.connectors import SmtpPartlySent

    mailer(smtp_peer)
    smtp_peer.refuse_once = {"two"}
    messages = [
        EmailMessage(subject, "body", to=["ada@example.com"]) for subject in ["one", "two", "three"]
    ]
    with pytest.raises(SmtpPartlySent) as raised:
        get_connector("mailer").send(messages)
    assert (raised.value.sent, raised.value.total) == (1, 3)
    assert str(raised.value).endswith(
        "(after 1 of 3 messages were accepted; sending them all again sends those twice)"
    )
    assert subjects(smtp_peer) == ["one"]


def test_a_message_is_known_by_what_is_sent_not_by_its_date_or_id():
    """Built twice, a message differs in its Date, Message-ID and multipart boundaries;
    a change to anything sent, the envelope included, is another message."""
    from django.core.mail import EmailMultiAlternatives

    from django_pgjobs.connectors.sent_mail import fingerprint

    def built(**changes) -> str:
        fields = {"subject": "s", "body": "b", "from_email": "a@example.com",
                  "to": ["t@example.com"], "bcc": [], **changes}  # fmt: skip
        message = EmailMultiAlternatives(**fields)
        message.attach_alternative("<p>b</p>", "text/html")
        message.attach("note.txt", "attached", "text/plain")
        return fingerprint(message)

    assert built() == built()
    others = [built(subject="S"), built(body="c"), built(to=["u@example.com"]),
              built(bcc=["b@example.com"]), built(from_email="z@example.com")]  # fmt: skip
    assert len({built(), *others}) == 1 + len(others)


def test_a_message_s_fingerprint_is_keyed_by_the_secret_key(settings):
    """The fingerprint is shown wherever the job's meta is (admin, API, CLI): a plain
    hash of a message with a short secret in it (a six-digit code) let whoever reads
    the row try every guess against it. Keyed by SECRET_KEY, it can't be recomputed."""
    import hashlib
    import json

    from django.core.mail import EmailMessage

    from django_pgjobs.connectors.sent_mail import fingerprint

    message = EmailMessage("Your code", "123456", "a@example.com", ["t@example.com"])
    first = fingerprint(message)
    built = message.message()
    for name in ("Date", "Message-ID"):
        del built[name]
    plain = hashlib.sha256(json.dumps([message.from_email, message.recipients()]).encode())
    plain.update(built.as_bytes())
    assert first != plain.hexdigest()[:32]
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert fingerprint(message) != first
    assert len(first) == 32 and int(first, 16) >= 0
