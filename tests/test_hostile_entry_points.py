"""Hostile input at the entry points, cases test_hostile_more left out: a job id in
text read one way everywhere.

Each case is refused where it comes in with the documented error, before any
query or request is made.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import smtplib
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from django_pgjobs import InvalidOption, Job, RetryAfter, Snooze, inline, limits
from django_pgjobs.api.tokens import issue
from django_pgjobs.compat import InvalidTask, TaskResultDoesNotExist, task_backends
from django_pgjobs.connectors import deadline
from django_pgjobs.connectors.errors import ConnectorError
from django_pgjobs.connectors.store import get_connector
from django_pgjobs.models import WorkerProcess
from django_pgjobs.selection import InvalidSelection, parse_id
from django_pgjobs.states import JobState
from tests.admin_helpers import changelist
from tests.conftest import wait_until
from tests.django_tasks_for_tests import add as django_add
from tests.factories import ConnectorFactory, ScheduleFactory, WorkerProcessFactory

ADD = "testproject.demo.tasks.add"

# -- a job id in text ------------------------------------------------------------------------

#: Text int() reads as a number that is no job id as the id rule says it (str(id)
#: exactly): "{}" is a real job's id.
NOT_IDS = [
    " {} ", "{} ", "\t{}", "{}\n", "+{}", "-{}", "0{}", "1_000", "{}_0", "\u0661", "\uff11",
    "{}.0", "0", "-1", "", str(limits.MAX_ID + 1), "9" * 20, "9" * 5000, "0x1", "1e3",
]  # fmt: skip


@pytest.fixture
def job_id(db) -> str:
    return str(django_add.enqueue(1, 2).id)


def test_one_rule_reads_a_job_id_in_text():
    assert limits.id_in_text("1") == 1
    assert limits.id_in_text(str(limits.MAX_ID)) == limits.MAX_ID
    for text in NOT_IDS:
        assert limits.id_in_text(text.format(1)) is None, text
    assert limits.id_in_text(1) is None  # text only: an int is no id *in text*


@pytest.mark.parametrize("text", NOT_IDS)
def test_the_django_tasks_backend_reads_no_other_id(job_id, text):
    with pytest.raises(TaskResultDoesNotExist, match="is not a pgjobs job id"):
        task_backends["default"].get_result(text.format(job_id))


@pytest.mark.parametrize("text", NOT_IDS)
def test_the_api_reads_no_other_id_in_a_path(client, job_id, text):
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"])[1]}
    assert client.get(f"/jobs/{job_id}", headers=bearer).status_code == 200
    path = quote(text.format(job_id), safe="")
    response = client.get(f"/jobs/{path}", headers=bearer)
    # "" is the enqueue endpoint, which takes no GET
    assert response.status_code == (405 if path == "" else 404), text


@pytest.mark.parametrize("text", NOT_IDS)
def test_the_operators_selection_reads_no_other_id(job_id, text):
    assert parse_id(job_id) == parse_id(f"#{job_id}") == int(job_id)
    with pytest.raises(InvalidSelection, match="not a job id"):
        parse_id(text.format(job_id))
    with pytest.raises(InvalidSelection, match="not a job id"):
        parse_id("#" + text.format(job_id))


@pytest.mark.parametrize("term", ["9" * 5000, "#" + "9" * 5000])
def test_the_admins_search_by_id_reads_ids_by_the_same_rule(admin_client, job_id, term):
    """int() raised on 5,000 digits: the job list answered 500."""
    found = admin_client.get(changelist(), {"q": f"#{job_id}"})
    assert found.context["cl"].result_count == 1
    assert admin_client.get(changelist(), {"q": term}).status_code == 200


@pytest.mark.parametrize("text", NOT_IDS)
def test_stopworker_reads_no_other_id(db, text):
    """argparse's int() read " 5 ", "+5", "05", "1_000" and Arabic-Indic digits as
    ids: ``stopworker 05`` asked worker 5 to stop, ``stopworker \u0661`` worker 1."""
    worker = WorkerProcessFactory()
    with pytest.raises(CommandError, match=r"^not a worker process id: ") as refused:
        call_command("stopworker", text.format(worker.pk), stdout=io.StringIO())
    assert refused.value.returncode == 1
    assert not WorkerProcess.objects.filter(stop_requested=True).exists()
    call_command("stopworker", str(worker.pk), stdout=io.StringIO())
    assert WorkerProcess.objects.get().stop_requested


#: Text int() and float() read as numbers that no operator types as one: Arabic-Indic
#: and full-width digits, white space, a plus sign, underscores (float: nan and inf).
NOT_WHOLE_NUMBERS = ["\u0665", "\uff15", "\u0661\u0660", " 5", "5 ", "+5", "1_0"]
NOT_DECIMALS = ["\u0665", "\u0661.5", " 5", "+5", "1_0", "nan", "inf", "1e400"]
#: Each number option of the commands: (command, arguments before it), its flag.
NUMBER_OPTIONS = [
    (("pgjobs", "list"), "--limit", NOT_WHOLE_NUMBERS),
    (("pgjobs", "schedules"), "--next", NOT_WHOLE_NUMBERS),
    (("runworker", "--burst"), "--concurrency", NOT_WHOLE_NUMBERS),
    (("runworker", "--burst"), "--processes", NOT_WHOLE_NUMBERS),
    (("runworker", "--burst"), "--prefetch", NOT_WHOLE_NUMBERS),
    (("runworker", "--burst"), "--metrics-port", NOT_WHOLE_NUMBERS),
    (("runworker", "--burst"), "--poll-interval", NOT_DECIMALS),
    (("issue_api_token", "deploy", "--queues", "*"), "--expires-in-days", NOT_DECIMALS),
]


@pytest.mark.parametrize(
    ("command", "flag", "text"),
    [(command, flag, text) for command, flag, texts in NUMBER_OPTIONS for text in texts],
)
def test_a_number_option_reads_ascii_digits_only(command, flag, text):
    """argparse's int() and float() read "\u0665" (Arabic-Indic) and "\uff15"
    (full-width) as 5, and " 5", "+5" and "1_0" too: ``pgjobs list --limit \u0665``
    listed five jobs, ``runworker --concurrency \u0662`` ran two threads. (Parsed
    only: a command that took the text would run.)"""
    name, *before = command
    parser = load_command_class("django_pgjobs", name).create_parser("manage.py", name)
    with pytest.raises(CommandError) as refused:
        parser.parse_args([*before, flag, text])
    kind = "whole number" if flag != "--poll-interval" and "days" not in flag else "number"
    nor_auto = ', nor "auto"' if flag == "--prefetch" else ""
    assert str(refused.value) == (
        f"Error: argument {flag}: {limits.shown(text)} is not a {kind} written in ASCII "
        f"digits{nor_auto}"
    )


def test_a_cancel_notice_for_no_job_id_is_ignored(worker):
    """The listener read its target with int(): 5,000 digits raised in it."""
    for target in ["9" * 5000, "01", "-1", "\u0661"]:
        worker._on_notify("pgjobs_control", f"cancel:{target}")


# -- POST /jobs/run's numbers --------------------------------------------------------------

ODD_RUN_NUMBERS = [
    " 5", "5 ", "\t5", "+5", "1_0", "\u0663", "\uff15", "true", "", "0x5", "5e0", "inf", "nan",
    "9" * 5000,
]  # fmt: skip


def run_request(client, query: str):
    """POST /jobs/run with ``query`` (already encoded), one available job waiting: the
    answer, once checked that the job was not run."""
    job = Job.enqueue(ADD, [1, 1])
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}
    response = client.post(f"/jobs/run?{query}", headers=bearer)
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE
    return response


@pytest.mark.parametrize(
    "value", [*ODD_RUN_NUMBERS, "5.0", "1.5", "0", "-1", "101", str(2**63), "1e2"]
)
def test_a_run_limit_is_an_integer_in_ascii_digits_or_a_400_naming_it(db, client, value):
    """int() read " 5", "+5", "1_0" and other scripts' digits as a limit."""
    response = run_request(client, "limit=" + quote(value, safe=""))
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["limit"]


@pytest.mark.parametrize("value", [*ODD_RUN_NUMBERS, "0", "-1", "1e2", ".5", "5.", "1e309"])
def test_run_max_seconds_are_a_decimal_in_ascii_digits_or_a_400_naming_it(db, client, value):
    """float() read " 5", "1_0", "1e2" and other scripts' digits as seconds."""
    response = run_request(client, "max_seconds=" + quote(value, safe=""))
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["max_seconds"]


@pytest.mark.parametrize("query", ["limit=1&limit=100", "max_seconds=1&max_seconds=50"])
def test_a_run_parameter_given_twice_is_a_400_not_read_as_the_last(db, client, query):
    """A proxy or log reading the first saw another limit than the one applied."""
    response = run_request(client, query)
    assert response.status_code == 400
    assert "given more than once" in str(response.json()["fields"])


@pytest.mark.parametrize("query", ["limit=1", "limit=05", "limit=100", "max_seconds=0.5"])
def test_run_numbers_in_plain_digits_are_taken(db, client, query):
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}
    assert client.post(f"/jobs/run?{query}", headers=bearer).status_code == 200


# -- the http connector's request(method=) -------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["", " GET", "GET ", "GET\r\nX-Injected: 1", "G\u00c9T", "GE T", "GET/1", "(GET)", 7, b"GET",
     "CONNECT", "connect", "TRACE", "Trace"],
)  # fmt: skip
def test_a_method_no_request_can_carry_is_refused_before_any_request(db, http_peer, method):
    """request(method=) was used as given: "" fell back to the configured method, a
    line break raised http.client's ValueError as a failed call (retried), an int
    raised AttributeError, and TRACE echoed the request, credentials included, into
    the answer."""
    ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"token": "s3cret"})
    with pytest.raises(InvalidOption, match=r"^method ") as refused:
        get_connector("hook").request({"a": 1}, method=method)
    assert "s3cret" not in str(refused.value)
    assert not http_peer.received


@pytest.mark.parametrize("method", ["get", "Patch", "PURGE", "PROPFIND"])
def test_a_method_that_is_a_token_is_sent_upper_cased(db, http_peer, method):
    ConnectorFactory(name="hook", config={"url": http_peer.url})
    response = get_connector("hook").request(method=method, check=False)
    if method.upper() in ("GET", "PATCH"):
        assert response.status == 200 and http_peer.received[0].method == method.upper()
    else:  # the test server knows no such method: it answered 501, so it was sent
        assert response.status == 501


# -- the http connector's timeout bounds the whole request ----------------------------------


def ended(action: Callable[[], object], what: str) -> dict[str, object]:
    """Run ``action`` on a thread, waited on with a deadline of 8 s: ``error``, what it
    raised (None: it returned), and ``seconds``, how long it took."""
    outcome: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            action()
            outcome["error"] = None
        except Exception as error:  # the test looks at what it was
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    threading.Thread(target=call, daemon=True).start()
    assert wait_until(lambda: "seconds" in outcome, 8), f"{what} after 8 s"
    return outcome


class LocalPeer:
    """A server on 127.0.0.1 for one connection, which ``talk`` serves on a thread of
    its own; ``trickle`` sends bytes one at a time until ``close``."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            peer, _ = self.listener.accept()
            with peer:
                self.talk(peer)

    def talk(self, peer: socket.socket) -> None:
        raise NotImplementedError

    def trickle(self, peer: socket.socket, data: bytes) -> bool:
        """Send ``data`` a byte each ``pause`` seconds; False if closed meanwhile."""
        for byte in data:
            if self.stop.wait(self.pause):
                return False
            peer.sendall(bytes([byte]))
        return True

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(10)


class TricklingPeer(LocalPeer):
    """An HTTP server that answers ``at_once``, then ``trickled`` a byte each ``pause``
    seconds: never silent as long as one read's timeout."""

    def __init__(self, at_once: bytes, trickled: bytes, pause: float) -> None:
        self.at_once, self.trickled = at_once, trickled
        super().__init__(pause)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def talk(self, peer: socket.socket) -> None:
        _read_request(peer)  # all of it: a close with bytes unread sends a reset
        peer.sendall(self.at_once)
        self.trickle(peer, self.trickled)


def _read_request(peer: socket.socket) -> None:
    """Read a request's head and the body its Content-Length announces."""
    peer.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        received += peer.recv(65536) or b"\r\n\r\n"
    head, _, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    while length and len(body) < int(length[1]):
        body += peer.recv(65536) or b"x" * int(length[1])


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n"


@pytest.mark.parametrize(
    "at_once, trickled",
    [(b"", HEAD + b"X-Slow: " + b"x" * 200 + b"\r\n\r\n" + b"x" * 100),  # the head trickles
     (HEAD + b"\r\n", b"x" * 100)],  # the body trickles
    ids=["head", "body"],
)  # fmt: skip
def test_a_peer_trickling_its_answer_is_cut_off_at_the_connectors_timeout(db, at_once, trickled):
    """A byte each 0.1 s: each read waited less than the 0.5 s timeout, so the
    request took as long as the peer liked (10-30 s here, forever for a hostile peer)."""
    peer = TricklingPeer(at_once, trickled, pause=0.1)
    try:
        ConnectorFactory(name="slow", config={"url": peer.url, "timeout": 0.5})
        connector = get_connector("slow")
        outcome = ended(lambda: connector.request({"a": 1}), "still reading")
        assert isinstance(outcome.get("error"), ConnectorError), outcome
        assert "within the timeout (0.5 s)" in str(outcome["error"])
        assert outcome["seconds"] < 2.5
    finally:
        peer.close()


# -- run_at without time zone support ---------------------------------------------------------

#: 09:00 in Tokyo (UTC+9, no daylight saving time): midnight UTC.
TOKYO_NINE = datetime(2030, 1, 1, 9, 0)
MIDNIGHT_UTC = datetime(2030, 1, 1, tzinfo=UTC)


def run_at_instant(job: Job) -> datetime:
    """The job's run_at as stored, an instant whatever the session's time zone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM run_at) FROM pgjobs_job WHERE id = %s", [job.pk])
        return datetime.fromtimestamp(float(cursor.fetchone()[0]), UTC)


@pytest.mark.parametrize("run_at", [TOKYO_NINE, MIDNIGHT_UTC, MIDNIGHT_UTC.astimezone()])
def test_without_time_zone_support_a_naive_run_at_is_local_time(db, run_at):
    """With USE_TZ off Django's datetimes are naive, in TIME_ZONE: enqueue refused them
    ("must be timezone-aware") while the job's own times were stored that way."""
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
        job = Job.enqueue(ADD, [1, 2], run_at=run_at)
        assert job.run_at == TOKYO_NINE  # as Django holds it: naive, in TIME_ZONE
        assert Job.objects.get(pk=job.pk).run_at == TOKYO_NINE
        [batch] = Job.enqueue_many([{"task": ADD, "args": [1, 2], "run_at": run_at}])
        assert run_at_instant(job) == run_at_instant(batch) == MIDNIGHT_UTC


def test_without_time_zone_support_a_django_task_may_run_after_a_naive_time(db):
    """Django takes a naive run_after with USE_TZ off; the backend refused it."""
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
        result = django_add.using(run_after=TOKYO_NINE).enqueue(1, 2)
        assert run_at_instant(Job.objects.get(pk=result.id)) == MIDNIGHT_UTC


def test_with_time_zone_support_a_naive_run_at_is_still_refused(db):
    with pytest.raises(InvalidOption, match="run_at must be timezone-aware"):
        Job.enqueue(ADD, [1, 2], run_at=TOKYO_NINE)
    with pytest.raises(InvalidTask, match="aware"):
        django_add.using(run_after=TOKYO_NINE)
    assert not Job.objects.exists()


# -- the http connector's answer: whole, and HTTP ---------------------------------------------


def answer_of(peer: TricklingPeer) -> Exception | None:
    """What a request to ``peer`` raised (None: it returned), waited on with a deadline."""
    ConnectorFactory(name="peer", config={"url": peer.url, "timeout": 5})
    connector = get_connector("peer")
    try:
        outcome = ended(lambda: connector.request({"a": 1}, check=False), "no answer")
    finally:
        peer.close()
    return outcome["error"]  # type: ignore[return-value]


@pytest.mark.parametrize("status", [b"200 OK", b"500 Internal Server Error"])
def test_an_answer_shorter_than_its_content_length_is_an_error_not_a_result(db, status):
    """read(amt) returned the 40 bytes that came and no error: a truncated answer
    was the job's result."""
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: 100\r\n\r\n"
    error = answer_of(TricklingPeer(head + b"x" * 40, b"", 0))
    assert isinstance(error, ConnectorError), error
    assert str(error) == f"POST {display_url_of(error)} failed: answer cut short: 40 of 100 bytes"


def display_url_of(error: Exception) -> str:
    return str(error).split(" ")[1]


@pytest.mark.parametrize(
    "answer, why",
    [(b"garbage\r\n\r\n", "not HTTP"),  # BadStatusLine
     (b"HTTP/1.1 200 OK\r\nX: " + b"x" * 70_000 + b"\r\n\r\n", "not HTTP (LineTooLong"),
     (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunked body"),  # no size
     (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nxx", "chunked body")],
    ids=["status-line", "long-header", "chunk-size", "chunk-cut"],
)  # fmt: skip
def test_an_answer_that_is_not_http_is_a_connector_error(db, answer, why):
    """http.client's HTTPException (BadStatusLine, LineTooLong, IncompleteRead...) came
    out of the connector as it was: neither a ConnectorError nor redacted."""
    error = answer_of(TricklingPeer(answer, b"", 0))
    assert isinstance(error, ConnectorError), error
    assert str(error).startswith("POST http://127.0.0.1:") and why in str(error), error


# -- a deadline running out once the exchange is whole: no failure, no repeat ----------------


@pytest.fixture
def late_timer(monkeypatch):
    """The deadline's timer firing the moment the answer was read, before the exchange
    could end it: forced, so no sleep decides whether the race happens."""

    def expire_the_current_deadline() -> None:
        current = deadline._current.get()
        assert current is not None, "outside the connector's deadline"
        current.expire()

    def read_then_expire(self, *args, **kwargs):
        body = real_read(self, *args, **kwargs)
        expire_the_current_deadline()
        return body

    def sendmail_then_expire(self, *args, **kwargs):
        refused = real_sendmail(self, *args, **kwargs)
        expire_the_current_deadline()
        return refused

    real_read, real_sendmail = http.client.HTTPResponse.read, smtplib.SMTP.sendmail
    monkeypatch.setattr(http.client.HTTPResponse, "read", read_then_expire)
    monkeypatch.setattr(smtplib.SMTP, "sendmail", sendmail_then_expire)


def test_an_http_answer_read_whole_before_the_deadline_fired_is_a_success(
    db, http_peer, late_timer
):
    """`expired` alone decided: the POST done and answered was a ConnectorError, and the
    job's retry sent it again."""
    ConnectorFactory(name="hook", config={"url": http_peer.url, "timeout": 5})
    response = get_connector("hook").request({"a": 1})
    assert (response.status, response.body) == (200, b'{"ok": true}')
    assert len(http_peer.received) == 1


def test_a_chunked_answer_read_whole_before_the_deadline_fired_is_a_success(db, late_timer):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    peer = TricklingPeer(chunked, b"", 0)
    ConnectorFactory(name="hook", config={"url": peer.url, "timeout": 5})
    connector = get_connector("hook")
    try:
        outcome = ended(lambda: connector.request({"a": 1}), "no answer")
    finally:
        peer.close()
    assert outcome["error"] is None, outcome


def test_an_answer_ended_by_a_close_as_the_deadline_fired_is_still_a_timeout(db, late_timer):
    """Read up to the peer's close, the end of file may have been the deadline's shutdown:
    such an answer can't be taken as whole."""
    peer = TricklingPeer(b"HTTP/1.0 200 OK\r\n\r\nok", b"", 0)
    ConnectorFactory(name="hook", config={"url": peer.url, "timeout": 5})
    connector = get_connector("hook")
    try:
        outcome = ended(lambda: connector.request({"a": 1}), "no answer")
    finally:
        peer.close()
    assert "no whole answer within the timeout (5 s)" in str(outcome["error"]), outcome


def test_a_mail_accepted_before_the_deadline_fired_counts_as_sent(db, smtp_peer, late_timer):
    config = {"host": smtp_peer.host, "port": smtp_peer.port, "username": smtp_peer.username}
    ConnectorFactory(
        name="mail", kind="smtp", config=config, secrets={"password": smtp_peer.password}
    )
    assert get_connector("mail").send_mail("subject", "body", "to@example.com") == 1
    assert len(smtp_peer.messages) == 1


# -- the smtp connector's timeout bounds the whole exchange ------------------------------------


class TricklingSmtpPeer(LocalPeer):
    """An SMTP-ish server: ``answers[0]`` as its greeting, then one answer per command
    line; ``answers[slow]`` goes a byte each ``pause`` seconds."""

    def __init__(self, answers: list[bytes], slow: int, pause: float) -> None:
        self.answers, self.slow = answers, slow
        super().__init__(pause)

    def talk(self, peer: socket.socket) -> None:
        with peer.makefile("rb") as commands:
            peer.settimeout(10)
            for index, answer in enumerate(self.answers):
                if index:
                    commands.readline()
                if index != self.slow:
                    peer.sendall(answer)
                elif not self.trickle(peer, answer):
                    return


SMTP_ANSWERS = [
    b"220-" + b"x" * 200 + b"\r\n220 ready\r\n",
    b"250-" + b"x" * 200 + b"\r\n250 OK\r\n",
]


@pytest.mark.parametrize(
    "operation, slow",
    [("send_mail", 0), ("send_mail", 1), ("test", 0)],  # test() says no EHLO without TLS or login
    ids=["send-greeting", "send-ehlo", "test-greeting"],
)
def test_an_smtp_peer_trickling_is_cut_off_at_the_connectors_timeout(db, operation, slow):
    """A byte each 0.1 s: each read waited less than the 0.5 s timeout, so sending a
    mail took as long as the server liked (20 s here, forever for a hostile one)."""
    peer = TricklingSmtpPeer(SMTP_ANSWERS, slow, pause=0.1)
    try:
        config = {"host": "127.0.0.1", "port": peer.port, "timeout": 0.5}
        ConnectorFactory(name="slowmail", kind="smtp", config=config)
        connector = get_connector("slowmail")
        if operation == "test":
            outcome = ended(connector.test, "still talking")
        else:
            outcome = ended(
                lambda: connector.send_mail("subject", "body", "to@example.com"), "still talking"
            )
        assert isinstance(outcome.get("error"), ConnectorError), outcome
        assert str(outcome["error"]) == (
            f"SMTP 127.0.0.1:{peer.port}: no whole exchange within the timeout (0.5 s)"
        )
        assert outcome["seconds"] < 2.5
    finally:
        peer.close()


# -- Snooze and RetryAfter until= without time zone support -------------------------------------


@pytest.mark.parametrize("later", [Snooze, RetryAfter])
def test_without_time_zone_support_a_naive_until_is_local_time(later):
    """With USE_TZ off Django's datetimes are naive: Snooze(until=timezone.now() + ...)
    raised InvalidOption in the task, a failed attempt, while run_at took it (7fe8c2c)."""
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
        assert later(until=TOKYO_NINE).until == MIDNIGHT_UTC
        assert later(until=MIDNIGHT_UTC).until == MIDNIGHT_UTC
        with pytest.raises(InvalidOption, match="out of range"):
            later(until=datetime(1, 1, 1, 8))  # the day before year 1 began in UTC


def test_without_time_zone_support_a_task_snoozes_until_a_naive_time(worker):
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
        job = Job.enqueue("tests.tasks_for_flow.snooze_until", [TOKYO_NINE.isoformat()])
        worker.drain()
        job.refresh_from_db()
        assert (job.state, job.attempt, job.errors) == (JobState.SCHEDULED, 0, [])
        assert run_at_instant(job) == MIDNIGHT_UTC


@pytest.mark.parametrize("later", [Snooze, RetryAfter])
def test_with_time_zone_support_a_naive_until_is_still_refused(later):
    with pytest.raises(InvalidOption, match="until must be timezone-aware"):
        later(until=TOKYO_NINE)


# -- the admin's job pages read a job id by the same rule ------------------------------------


def admin_job_url(text: str, view: str) -> str:
    """A job's admin URL for ``text`` as the id, quoted as a browser sends it."""
    return f"/admin/pgjobs/job/{quote(text, safe='')}/{view}/"


@pytest.mark.parametrize("text", [text for text in NOT_IDS if text])
def test_the_admins_job_pages_read_no_other_id(admin_client, job_id, text):
    """Django read the id with int(): " 1 " and "+1" showed job 1's page, its history,
    and the page that deletes it. Anything else than the id is what an id no job has
    gets: the admin's "doesn't exist" redirect (404 where no admin URL matches)."""
    unknown = admin_client.get(admin_job_url(str(limits.MAX_ID), "change"))
    assert (unknown.status_code, unknown["Location"]) == (302, reverse("admin:index"))
    for view in ("change", "history", "delete"):
        assert admin_client.get(admin_job_url(job_id, view)).status_code == 200, view
        answer = admin_client.get(admin_job_url(text.format(job_id), view))
        assert (answer.status_code, answer.get("Location")) in [
            (302, reverse("admin:index")), (404, None)
        ], (view, answer.status_code)  # fmt: skip


@pytest.mark.parametrize("text", ["+{}", "0{}", " {} ", "{}\n"])
def test_the_admins_job_actions_take_no_other_id(admin_client, job_id, text):
    """The retry and cancel URLs read "01" with int(), and a list action's selection
    " 1 ": job 1 was cancelled."""
    for view in ("retry", "cancel"):
        answer = admin_client.post(admin_job_url(text.format(job_id), view))
        assert answer.status_code in (302, 404) and answer.get("Location") != changelist()
    data = {"action": "cancel_jobs", "index": 0, "_selected_action": [text.format(job_id)]}
    admin_client.post(changelist(), data)
    assert Job.objects.get(pk=job_id).state == JobState.AVAILABLE


@pytest.mark.parametrize("model", ["schedule", "workerprocess"])
@pytest.mark.parametrize("text", ["+{}", "0{}", " {} ", "{}\n"])
def test_the_admins_schedule_and_worker_pages_read_no_other_id(admin_client, model, text):
    """<int:> and the default get_object's int() read "01" and " 1 " as row 1: such a
    URL showed schedule or worker 1's page, and disabled, ran or stopped it."""
    row = ScheduleFactory() if model == "schedule" else WorkerProcessFactory()
    base = f"/admin/pgjobs/{model}/"
    assert admin_client.get(f"{base}{row.pk}/change/").status_code == 200
    for view in ("change", "history", "delete"):
        answer = admin_client.get(f"{base}{quote(text.format(row.pk), safe='')}/{view}/")
        assert (answer.status_code, answer.get("Location")) in [
            (302, reverse("admin:index")), (404, None)
        ], (view, answer.status_code)  # fmt: skip
    actions = ["disable", "run-now"] if model == "schedule" else ["stop"]
    for action in actions:
        answer = admin_client.post(f"{base}{quote(text.format(row.pk), safe='')}/{action}/")
        assert answer.status_code == 404, action
    action = "disable_schedules" if model == "schedule" else "stop_workers"
    data = {"action": action, "index": 0, "_selected_action": [text.format(row.pk)]}
    admin_client.post(base, data)
    row.refresh_from_db()
    if model == "schedule":
        assert row.enabled and not Job.objects.exists()
    else:
        assert not row.stop_requested


# -- POST /jobs/run's parameters in a JSON body ------------------------------------------------


def run_with_body(client, body: bytes, content_type: str = "application/json", query: str = ""):
    """POST /jobs/run with ``body``, one available job waiting: the answer, once
    checked that the job was not run."""
    job = Job.enqueue(ADD, [1, 1])
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}
    response = client.post(f"/jobs/run?{query}", body, content_type=content_type, headers=bearer)
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE
    return response


def test_a_run_limit_in_a_json_body_is_applied(db, client):
    """The view read the query string only: {"limit": 1} ran every due job, up to 10."""
    jobs = [Job.enqueue(ADD, [1, n]) for n in range(3)]
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}
    body = {"limit": 1, "queue": ["default"], "status": "available", "max_seconds": 30}
    response = client.post("/jobs/run", body, content_type="application/json", headers=bearer)
    assert response.status_code == 200 and response.json()["ran"] == 1, response.json()
    assert sorted(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("state", flat=True)) \
        == ["available", "available", "completed"]  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [{"limit": "5"}, {"limit": True}, {"limit": 5.0}, {"limit": 0}, {"limit": 101},
     {"limit": 10**30}, {"max_seconds": "1"}, {"max_seconds": 0}, {"max_seconds": False},
     {"max_seconds": -1}, {"max_seconds": 10**30}, {"queue": 5}, {"queue": ["default", 5]},
     {"status": ["done"]}, {"status": "available,done"}, {"limits": 5}],
)  # fmt: skip
def test_a_run_parameter_in_a_json_body_is_checked_as_in_the_query(db, client, body):
    response = run_with_body(client, json.dumps(body).encode())
    assert response.status_code == 400
    assert list(response.json()["fields"]) == list(body), response.json()


@pytest.mark.parametrize("raw", [b"[1]", b"1e400", b'{"max_seconds": 1e400}', b"{", b" "])
def test_a_run_body_that_is_no_json_object_of_parameters_is_a_400(db, client, raw):
    assert run_with_body(client, raw).status_code == 400


@pytest.mark.parametrize("raw", [b"{}", b"null", b'{"limit": null}', b'{"queue": "default"}'])
def test_a_run_body_without_a_number_takes_the_defaults(db, client, raw):
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}
    response = client.post("/jobs/run", raw, content_type="application/json", headers=bearer)
    assert response.status_code == 200


def test_a_run_parameter_in_the_query_and_the_body_is_a_400(db, client):
    response = run_with_body(client, b'{"limit": 2}', query="limit=1")
    assert response.status_code == 400
    assert response.json()["fields"] == {
        "limit": "given in both the query string and the body: give it once"
    }


def test_a_run_body_that_is_not_json_is_refused_saying_what_to_send(db, client):
    """curl -d limit=5 sends a form: its limit was ignored, every due job ran."""
    response = run_with_body(client, b"limit=5", "application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]
    assert "query string" in response.json()["message"]


MULTIPART = "multipart/form-data; boundary=x"


@pytest.mark.parametrize(
    "raw",
    [b"hello world", b'--x\r\nContent-Type: text/plain\r\n\r\n1\r\n--x--\r\n',
     b'--x\r\nContent-Disposition: form-data\r\n\r\n1\r\n--x--\r\n',
     b'--x\r\nContent-Disposition: form-data; name="limit"\r\n\r\n1\r\n'],
)  # fmt: skip
def test_a_multipart_body_that_carries_something_is_refused_even_unparsed(db, client, raw):
    """Django's parser drops a part without a name and text that is no multipart at all:
    the body was taken as an empty form, and every due job ran."""
    response = run_with_body(client, raw, MULTIPART)
    assert response.status_code == 415 and "query string" in response.json()["message"]


def test_a_form_of_more_fields_than_django_reads_is_refused_as_json(db, client):
    """request.POST raised TooManyFieldsSent: Django's HTML 400 page."""
    response = run_with_body(client, b"a=1&" * 2000, "application/x-www-form-urlencoded")
    assert response.status_code == 415 and "query string" in response.json()["message"]


@pytest.mark.parametrize("body", [b"", b'{"limit": 1}'], ids=["no body", "a JSON body"])
def test_a_query_string_of_more_fields_than_django_reads_is_refused_as_json(db, client, body):
    """request.GET raised TooManyFieldsSent: Django's HTML 400 page, where every other
    refusal of the API is JSON naming what is wrong."""
    query = "&".join(f"k{n}=1" for n in range(1001))  # DATA_UPLOAD_MAX_NUMBER_FIELDS: 1000
    response = run_with_body(client, body, query=query)
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    said = "more than 1000 parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS); known: queue, status"
    assert response.json()["fields"]["query"].startswith(said)


@pytest.mark.parametrize("raw", [b"--x--\r\n", b"--x--", b"\r\n--x--\r\n"])
def test_an_empty_multipart_form_is_no_body(db, client, raw):
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True)[1]}
    response = client.post("/jobs/run", raw, content_type=MULTIPART, headers=bearer)
    assert response.status_code == 200, response.content


def test_a_run_body_over_the_upload_limit_is_a_413(db, client):
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        response = run_with_body(client, json.dumps({"queue": "x" * 200}).encode())
    assert response.status_code == 413


# -- inline.run_due: refused before it registers as a worker ---------------------------------

RUN_DUE_REFUSED = {
    "max_seconds a string": ({"max_seconds": "5"}, "max_seconds must be a number of seconds"),
    "max_seconds NaN": ({"max_seconds": float("nan")}, "max_seconds must be a number of seconds"),
    "max_seconds below 0": ({"max_seconds": -1}, "max_seconds must be a number of seconds"),
    "limit a string": ({"limit": "5"}, "limit must be a whole number"),
    "limit NaN": ({"limit": float("nan")}, "limit must be a whole number"),
    "limit 0": ({"limit": 0}, "limit must be between 1"),
    "queues a string": ({"queues": "default"}, "queues must be a list of queue names"),
    "states a string": ({"states": "available"}, "states must be a list of states"),
}


@pytest.mark.parametrize(("options", "said"), RUN_DUE_REFUSED.values(), ids=list(RUN_DUE_REFUSED))
def test_run_due_refuses_what_it_cant_use_and_writes_nothing(db, options, said):
    """A max_seconds or limit that is no number raised TypeError once the caller was
    registered as a worker: its row stayed, and its watchdog thread heartbeat it for as
    long as the process lived. A NaN was no limit at all (every due job ran), and a
    string of queues or states was read as its letters (unknown queue 'd')."""
    job = Job.enqueue(ADD, [1, 2])
    with pytest.raises(InvalidOption, match=re.escape(said)):
        inline.run_due(**options)
    assert not WorkerProcess.objects.exists()
    assert not [t for t in threading.enumerate() if t.name == "pgjobs-inline-watchdog"]
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE
