"""Connectors do only what their owner allowed.

A ``command`` connector runs nothing a job supplies (arguments, input) without its
owner's consent; an ``http`` connector reaches only the hosts and networks of
``PGJOBS["HTTP_ALLOWED_HOSTS"]`` when it is set, checked on resolved addresses at
connect time; and credentials can't be put where the admin shows them.
"""

from __future__ import annotations

import socket
import sys

import pytest
from django.core.exceptions import ValidationError

from django_pgjobs import Job
from django_pgjobs.checks import check_settings
from django_pgjobs.connectors import ConnectorRefused, deadline, get_connector
from django_pgjobs.connectors.destinations import Destinations
from django_pgjobs.models import Connector
from django_pgjobs.states import JobState
from tests.factories import ConnectorFactory, stored_as_before

pytestmark = pytest.mark.django_db

CALL = "django_pgjobs.connectors.tasks.call"


def run_one(worker, **enqueue) -> Job:
    job = Job.enqueue(**enqueue)
    worker.drain()
    job.refresh_from_db()
    return job


# -- command: nothing from the job without consent ----------------------------------------


def echo_stdin(name: str = "script", **config) -> Connector:
    code = "import sys; print('got', repr(sys.stdin.read()), sys.argv[1:])"
    config = {"executable": sys.executable, "args": ["-c", code], **config}
    return ConnectorFactory(name=name, kind="command", config=config)


def test_a_job_s_input_reaches_the_program_only_where_the_connector_allows_it(worker):
    echo_stdin()
    job = run_one(worker, task=CALL, kwargs={"payload": {"input": "rm -rf /"}}, connector="script")
    assert job.state == JobState.DISCARDED  # no retry changes the owner's mind
    assert "does not take input from jobs" in job.errors[0]["error"]
    assert "allow_job_input" in job.errors[0]["error"]
    echo_stdin("open", allow_job_input=True)
    job = run_one(worker, task=CALL, kwargs={"payload": {"input": "data"}}, connector="open")
    assert job.result["stdout"] == "got 'data' []\n"


def test_a_task_passing_input_needs_the_same_consent():
    echo_stdin()
    with pytest.raises(ConnectorRefused, match="allow_job_input"):
        get_connector("script").run(input="x")
    with pytest.raises(ConnectorRefused, match="allow_job_args"):
        get_connector("script").run(["--flag"])


def test_refused_arguments_discard_the_job_at_once(worker):
    echo_stdin()
    job = run_one(worker, task=CALL, kwargs={"payload": {"args": ["--x"]}}, connector="script")
    assert job.state == JobState.DISCARDED and job.attempt == 1
    assert "does not take arguments from jobs" in job.errors[0]["error"]


def test_a_job_without_input_runs_the_program_with_stdin_closed(worker):
    echo_stdin()
    job = run_one(worker, task=CALL, connector="script")
    assert job.result["stdout"] == "got '' []\n"


# -- http: the allow-list -------------------------------------------------------------------


@pytest.fixture
def allow(settings):
    def set_allowed(*entries: str) -> None:
        settings.PGJOBS = {**settings.PGJOBS, "HTTP_ALLOWED_HOSTS": list(entries)}

    return set_allowed


def hook(url: str, name: str = "hook") -> Connector:
    return ConnectorFactory(name=name, config={"url": url})


@pytest.mark.parametrize(
    "entries, host, allowed",
    [
        (["10.0.0.0/8"], "127.0.0.1", False),
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.0/8"], "127.0.0.1", True),
        (["127.0.0.0/8"], "localhost", True),  # resolved, then checked
        (["10.0.0.0/8"], "localhost", False),
        (["localhost"], "localhost", True),  # a name the operator trusts
        (["localhost"], "127.0.0.1", False),  # names match names, not addresses
        (["*.localhost"], "localhost", False),
        (["10.0.0.0/8"], "[::ffff:127.0.0.1]", False),  # no way round through IPv6
    ],
)
def test_http_connects_only_where_the_allow_list_says(allow, http_peer, entries, host, allowed):
    allow(*entries)
    port = http_peer.url.split(":")[2].split("/")[0]
    hook(f"http://{host}:{port}/hook")
    connector = get_connector("hook")
    if allowed:
        assert connector.call({"a": 1})["status"] == 200
        assert len(http_peer.received) == 1
    else:
        with pytest.raises(ConnectorRefused, match="HTTP_ALLOWED_HOSTS"):
            connector.call({"a": 1})
        assert http_peer.received == []


def test_a_failed_lookup_under_the_allow_list_is_retried_not_discarded(allow, worker, monkeypatch):
    """A resolver that fails for a while (EAI_AGAIN) is no refusal by the connector's
    owner: the job's attempt fails and is retried, as without the allow-list."""

    def resolver_down(host: str, port: int) -> list:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(deadline, "lookup", resolver_down)
    allow("192.0.2.0/24")
    hook("http://hooks.example.com/hook")
    job = run_one(worker, task=CALL, kwargs={"payload": {}}, connector="hook")
    assert job.state == JobState.RETRYABLE and job.attempt == 1
    assert "Temporary failure in name resolution" in job.errors[0]["error"]


def test_a_refused_destination_discards_the_job_and_the_admin_test_says_why(
    allow, http_peer, worker, admin_client
):
    allow("192.0.2.0/24")
    hook(http_peer.url)
    job = run_one(worker, task=CALL, kwargs={"payload": {}}, connector="hook")
    assert job.state == JobState.DISCARDED
    assert "127.0.0.1 (127.0.0.1) is not allowed" in job.errors[0]["error"]
    response = admin_client.post(
        "/admin/pgjobs/connector/",
        {"action": "test_connection", "index": 0,
         "_selected_action": [Connector.objects.get().pk]},
        follow=True,
    )  # fmt: skip
    assert "is not allowed by PGJOBS" in response.content.decode()
    assert http_peer.received == []


def test_the_address_checked_is_the_address_connected_to(allow, http_peer, monkeypatch):
    """A name is resolved once, checked, and the socket connects to that address: a
    second lookup (a rebinding DNS server) can't send it elsewhere."""
    port = int(http_peer.url.split(":")[2].split("/")[0])
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "192.0.2.1"])  # first allowed, then rebound

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    allow("127.0.0.0/8")
    hook(f"http://rebind.test:{port}/hook")
    assert get_connector("hook").call({})["status"] == 200
    assert http_peer.received[0].headers["Host"] == f"rebind.test:{port}"


def test_redirects_are_not_followed_so_they_lead_nowhere(allow, http_peer):
    allow("127.0.0.0/8")
    http_peer.status = 302
    http_peer.answer = b""
    hook(http_peer.url)
    with pytest.raises(Exception, match="answered 302"):
        get_connector("hook").call({})
    assert len(http_peer.received) == 1


def test_without_the_setting_any_host_is_allowed(http_peer):
    hook(http_peer.url)
    assert get_connector("hook").call({})["status"] == 200


@pytest.mark.parametrize("entries", [["not a host/x"], [""], [5], ["http://x.example"], ["*."]])
def test_a_bad_allow_list_fails_the_system_check(settings, entries):
    settings.PGJOBS = {"HTTP_ALLOWED_HOSTS": entries}
    assert any("HTTP_ALLOWED_HOSTS" in error.msg for error in check_settings())


def test_entries_parse_as_names_suffixes_and_networks():
    allowed = Destinations(["API.example.com", "*.example.org", "10.0.0.0/8", "2001:db8::/32"])
    assert allowed.allows_name("api.example.com.") and allowed.allows_name("a.b.example.org")
    assert not allowed.allows_name("example.org") and not allowed.allows_name("evil-example.org")
    assert allowed.allows_address("10.1.2.3") and allowed.allows_address("2001:db8::1")
    assert not allowed.allows_address("::ffff:127.0.0.1") and not allowed.allows_address("x")


# -- credentials belong in secrets ----------------------------------------------------------


@pytest.mark.parametrize(
    "config, field",
    [
        ({"url": "https://user:pass@api.example.com/"}, "config"),
        ({"url": "https://api.example.com/", "headers": {"Authorization": "Bearer x"}}, "config"),
        ({"url": "https://api.example.com/", "headers": {"cookie": "session=x"}}, "config"),
        ({"url": "https://api.example.com:99999/"}, "config"),
    ],
)
def test_an_http_config_with_credentials_or_a_bad_url_is_refused(config, field):
    with pytest.raises(ValidationError) as refused:
        Connector(name="hook", kind="http", config=config).full_clean()
    assert field in refused.value.message_dict


def test_a_basic_auth_username_with_a_colon_is_refused_when_written(http_peer):
    """Basic auth sends "username:password": a server takes what follows the first ":"
    for the password, so "api:k3y" put part of a credential in the plain config, shown
    in the admin. Refused when written (save() too); a row saved before keeps working,
    and an edit that leaves its username as it is saves."""
    for write in (lambda c: c.full_clean(), lambda c: c.save()):
        connector = Connector(
            name="hook", kind="http", config={"url": http_peer.url, "username": "api:k3y"}
        )
        with pytest.raises(ValidationError, match="must not hold ':'") as refused:
            write(connector)
        assert "k3y" not in str(refused.value)
    assert not Connector.objects.exists()
    hook = hook_with_password(http_peer.url)
    stored_as_before(hook, {"url": http_peer.url, "username": "api:k3y"})
    assert get_connector("hook").call({})["status"] == 200
    hook.description = "edited"
    hook.save()


def hook_with_password(url: str) -> Connector:
    return ConnectorFactory(name="hook", config={"url": url}, secrets={"password": "pw"})
