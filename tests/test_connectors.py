"""Connectors: stored safely, validated at enqueue, loaded fresh when a job runs."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from django_pgjobs import Job, UnknownConnector
from django_pgjobs.connectors import (
    ConnectorKind,
    ConnectorMisconfigured,
    HttpConnector,
    Option,
    get_connector,
    register_kind,
)
from django_pgjobs.connectors.registry import _kinds
from django_pgjobs.models import Connector
from django_pgjobs.secrets import SecretsUnreadable
from django_pgjobs.states import JobState
from tests.factories import ConnectorFactory

pytestmark = pytest.mark.django_db

TOKEN = "tok-3f9a1c77e2b54d0a"
KEY_A = "a" * 40
KEY_B = "b" * 40


def stored_column(connector: Connector) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT encrypted_secrets, config::text FROM pgjobs_connector WHERE id = %s",
            [connector.pk],
        )
        return " ".join(cursor.fetchone())


# -- secrets at rest ------------------------------------------------------------------


def test_secrets_are_stored_encrypted_with_only_their_names_in_clear():
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    assert TOKEN not in stored_column(hook)
    assert Connector.objects.get(pk=hook.pk).secret_names == ["token"]
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {"token": TOKEN}


def test_repr_and_str_never_show_a_secret():
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    resolved = get_connector("hook")
    for text in (repr(hook), str(hook), repr(resolved), str(resolved), repr(resolved.config)):
        assert TOKEN not in text
    assert "token" in repr(hook)  # the name may show, the value never


def test_a_key_put_in_front_decrypts_old_secrets_and_rotation_moves_them_to_it(settings):
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_A]}
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_B, KEY_A]}
    assert get_connector("hook").secret("token") == TOKEN

    call_command("rotate_connector_secrets", stdout=io.StringIO())

    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_B]}  # the old key is gone
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {"token": TOKEN}


def test_secrets_no_key_can_read_fail_with_advice_and_rotation_changes_nothing(settings):
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_A]}
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    before = stored_column(hook)
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_B]}
    with pytest.raises(SecretsUnreadable, match="rotate_connector_secrets"):
        get_connector("hook")
    with pytest.raises(CommandError, match="hook"):
        call_command("rotate_connector_secrets")
    assert stored_column(hook) == before


def test_secrets_saved_before_secret_keys_was_set_say_to_list_secret_key(settings):
    """A project starts without SECRET_KEYS (keys derived from SECRET_KEY), then sets
    it: every connector's secrets became unreadable, and the advice ("was the key that
    encrypted them removed?") named no key to put back: the one to list is SECRET_KEY,
    whose derived key is that of the same text in SECRET_KEYS."""
    settings.SECRET_KEY = "s" * 50
    settings.PGJOBS = {k: v for k, v in settings.PGJOBS.items() if k != "SECRET_KEYS"}
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_A]}
    said = r"encrypted before PGJOBS\['SECRET_KEYS'\] was set, with the key derived from SECRET_KEY"
    with pytest.raises(SecretsUnreadable, match=said):
        get_connector("hook")
    with pytest.raises(CommandError, match=said) as raised:
        call_command("rotate_connector_secrets", stdout=io.StringIO())
    assert "s" * 50 not in str(raised.value) and TOKEN not in str(raised.value)

    # What it says to do works: SECRET_KEY listed after the new key, rotate, drop it.
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_A, settings.SECRET_KEY]}
    call_command("rotate_connector_secrets", stdout=io.StringIO())
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_A]}
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {"token": TOKEN}


#: What a token may decrypt to other than the JSON object of secrets ``secrets.encrypt``
#: writes (a token made by hand, or by another program, with the key).
NO_SECRETS = {
    "a number": b"5",
    "a list": b'["token"]',
    "null": b"null",
    "a string": b'"' + TOKEN.encode() + b'"',
    "no JSON": b"token=" + TOKEN.encode(),
    "no UTF-8": b"\xff\xfe" + TOKEN.encode(),
    "nested 3,000 deep": b"[" * 3000 + b"]" * 3000,
    "a secret of 5,001 digits": b'{"token": 1' + b"0" * 5000 + b"}",
}


def with_token_of(plain: bytes) -> Connector:
    """A connector whose stored secrets decrypt, with the configured key, to ``plain``."""
    from django_pgjobs import secrets

    hook = ConnectorFactory(name="hook")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgjobs_connector SET encrypted_secrets = %s, secret_names = '[\"token\"]'"
            " WHERE id = %s",
            [secrets._cipher().encrypt(plain).decode(), hook.pk],
        )
    return Connector.objects.get(pk=hook.pk)


@pytest.mark.parametrize("plain", NO_SECRETS.values(), ids=list(NO_SECRETS))
def test_secrets_that_decrypt_to_no_object_of_secrets_are_unreadable(plain):
    """They came out of json.loads as they were: a job of the connector failed with
    AttributeError ('int' object has no attribute 'values'), JSONDecodeError or
    RecursionError, and a secret typed in the admin was a 500 (``update_secrets``)."""
    hook = with_token_of(plain)
    with pytest.raises(SecretsUnreadable, match="no JSON object of secrets") as raised:
        get_connector("hook")
    assert TOKEN not in str(raised.value)
    with pytest.raises(SecretsUnreadable, match="enter the secrets again"):
        hook.update_secrets({"api_key": "k-1"})
    hook.set_secrets({"api_key": "k-1"})  # starting over works
    hook.save()
    assert get_connector("hook").secret("api_key") == "k-1"


def test_rotation_re_encrypts_every_connector_it_can_and_names_each_it_cannot(settings):
    """One connector whose secrets no key decrypts (its key dropped too early, a token
    written by hand) stopped the rotation of every other: they were left needing the
    old key. Now each readable one is rotated, each other named with why, never with
    its secret or token, and the command fails (exit status 1)."""
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": ["c" * 40]}
    orphan = ConnectorFactory(name="orphan", secrets={"token": TOKEN})  # key C: dropped
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_A]}
    first = ConnectorFactory(name="first", secrets={"token": TOKEN})
    garbled = ConnectorFactory(name="garbled", secrets={"token": TOKEN})
    last = ConnectorFactory(name="last", secrets={"api_key": "k-1234"})
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgjobs_connector SET encrypted_secrets = %s WHERE id = %s",
            ["gAAAA-not-a-token-\u2603-" + TOKEN, garbled.pk],
        )
    kept = {row.pk: stored_column(row) for row in (orphan, garbled)}
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_B, KEY_A]}
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("rotate_connector_secrets", stdout=out, stderr=err)
    said = str(raised.value)
    assert "re-encrypted the secrets of 2 connector(s)" in out.getvalue()
    assert "connector 'orphan': its secrets can't be decrypted" in said
    assert "connector 'garbled': its secrets can't be decrypted" in said
    assert "'first'" not in said and "'last'" not in said
    for text in (said, out.getvalue(), err.getvalue()):
        assert TOKEN not in text and "k-1234" not in text and "gAAAA" not in text
    assert raised.value.returncode == 1

    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [KEY_B]}  # key A is gone
    assert Connector.objects.get(pk=first.pk).get_secrets() == {"token": TOKEN}
    assert Connector.objects.get(pk=last.pk).get_secrets() == {"api_key": "k-1234"}
    assert {pk: stored_column(Connector(pk=pk)) for pk in kept} == kept  # as they were


def test_rotation_with_keys_no_connector_could_use_says_so_once_and_writes_nothing(settings):
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    before = stored_column(hook)
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": ["short"]}
    with pytest.raises(CommandError, match=r"SECRET_KEYS'\] must be a list") as raised:
        call_command("rotate_connector_secrets", stdout=io.StringIO())
    assert "hook" not in str(raised.value)
    assert stored_column(hook) == before


def test_updating_some_secrets_keeps_the_others():
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN, "api_key": "k-1234"})
    hook.update_secrets({"api_key": "k-5678"}, remove=["token"])
    hook.save()
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {"api_key": "k-5678"}


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, config, secrets, field, fragment",
    [
        ("ftp", {}, {}, "kind", "unknown connector kind 'ftp'"),
        ("http", {}, {}, "config", "url: is required"),
        ("http", {"url": "ftp://x"}, {}, "config", "absolute http"),
        ("http", {"url": "http://x", "timeout": "10"}, {}, "config", "timeout: must be int"),
        ("http", {"url": "http://x", "retries": 3}, {}, "config", "retries: unknown option"),
        ("http", {"url": "http://x"}, {"pasword": "x"}, "secrets", "pasword: unknown secret"),
        ("smtp", {"host": "h", "use_tls": True, "use_ssl": True}, {}, "config", "exclude"),
        ("command", {"executable": "ls", "args": [1]}, {}, "config", "must be strings"),
        ("command", {"executable": "ls"}, {"NOT-AN-ENV": "x"}, "secrets", "environment variable"),
    ],
)
def test_bad_configurations_name_the_field(kind, config, secrets, field, fragment):
    connector = Connector(name="bad", kind=kind, config=config)
    connector.set_secrets(secrets)
    with pytest.raises(ValidationError) as raised:
        connector.full_clean()
    assert any(fragment in message for message in raised.value.message_dict[field]), raised.value


def test_a_connector_broken_in_the_database_fails_its_job_with_the_reason(worker):
    Connector.objects.create(name="broken", kind="http", config={"url": 42})
    job = Job.enqueue("django_pgjobs.connectors.tasks.call", connector="broken")
    assert worker.drain() == {"retryable": 1}
    job.refresh_from_db()
    assert "ConnectorMisconfigured" in job.errors[0]["error"]
    assert "config.url: must be str" in job.errors[0]["error"]


# -- enqueue --------------------------------------------------------------------------


def test_an_unknown_connector_at_enqueue_names_the_closest_one_that_exists():
    """A typo (connector="mailr") was told to create the connector it meant."""
    ConnectorFactory(name="mailer")
    with pytest.raises(
        UnknownConnector, match=r"unknown connector 'mailr' \(did you mean 'mailer'\?\)"
    ):
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2], connector="mailr")
    with pytest.raises(UnknownConnector) as far:
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2], connector="zzzzzz")
    assert "did you mean" not in str(far.value)
    assert not Job.objects.exists()


def test_enqueue_with_an_unknown_connector_is_refused_and_writes_nothing():
    with pytest.raises(UnknownConnector, match="nowhere"):
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2], connector="nowhere")
    with pytest.raises(UnknownConnector):
        Job.enqueue_many(
            [
                {"task": "testproject.demo.tasks.add", "args": [1, 2]},
                {"task": "testproject.demo.tasks.add", "args": [1, 2], "connector": "nowhere"},
            ]
        )
    assert not Job.objects.exists()


def test_a_connector_or_queue_stored_after_a_miss_is_known_at_once():
    """Stored names are cached per process and read again on a miss (known.KnownNames):
    a row made since the last read counts at once."""
    from django_pgjobs import UnknownQueue
    from tests.factories import QueueFactory

    with pytest.raises(UnknownConnector):
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2], connector="late")
    with pytest.raises(UnknownQueue):
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="late")
    ConnectorFactory(name="late")
    QueueFactory(name="late")
    job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], connector="late", queue="late")
    assert (job.connector, job.queue) == ("late", "late")


def test_enqueue_stores_the_connector_name_from_the_call_or_the_task():
    ConnectorFactory(name="hook")
    ConnectorFactory(name="mailer", kind="smtp", config={"host": "127.0.0.1"})
    assert Job.enqueue("testproject.demo.tasks.add", [1, 2], connector="hook").connector == "hook"
    from tests.tasks_for_connectors import welcome

    assert welcome.enqueue("a@example.com").connector == "mailer"
    assert welcome.using(connector="hook").enqueue("a@example.com").connector == "hook"


def test_a_connector_created_a_moment_ago_is_usable_at_once():
    with pytest.raises(UnknownConnector):
        Job.enqueue("testproject.demo.tasks.add", [1, 2], connector="fresh")
    ConnectorFactory(name="fresh")
    assert Job.enqueue("testproject.demo.tasks.add", [1, 2], connector="fresh").connector


# -- run time -------------------------------------------------------------------------


def test_a_task_reads_its_connector_from_the_job_context(worker):
    ConnectorFactory(name="hook")
    job = Job.enqueue("tests.tasks_for_connectors.connector_name", connector="hook")
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == (JobState.COMPLETED, "hook")


def test_a_connector_deleted_after_enqueue_fails_the_attempt_clearly(worker):
    ConnectorFactory(name="hook")
    job = Job.enqueue("tests.tasks_for_connectors.connector_name", connector="hook")
    Connector.objects.filter(name="hook").delete()
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.RETRYABLE
    assert "unknown connector 'hook'" in job.errors[0]["error"]


class EchoKind(ConnectorKind):
    kind = "echo"
    options = (Option("prefix", str, ">"),)
    secrets = ("seal",)

    def call(self, payload=None, **options):
        return f"{self.config['prefix']} {payload}"


@pytest.fixture
def echo_kind():
    register_kind(EchoKind)
    yield EchoKind
    _kinds.pop("echo", None)


def test_a_project_registers_its_own_kind(worker, echo_kind):
    Connector(name="echo", kind="echo", config={"prefix": "»"}).full_clean()
    Connector.objects.create(name="echo", kind="echo", config={"prefix": "»"})
    job = Job.enqueue(
        "django_pgjobs.connectors.tasks.call", kwargs={"payload": "hi"}, connector="echo"
    )
    worker.drain()
    job.refresh_from_db()
    assert job.result == "» hi"


def test_registering_something_that_is_not_a_kind_is_refused():
    with pytest.raises(TypeError):
        register_kind(dict)  # type: ignore[arg-type]


def test_the_call_task_without_a_connector_is_discarded_with_advice(worker):
    job = Job.enqueue("django_pgjobs.connectors.tasks.call", kwargs={"payload": {}})
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.DISCARDED
    assert "connector='<name>'" in job.errors[0]["error"]


def test_get_connector_of_a_misconfigured_row_names_the_problem():
    Connector.objects.create(name="broken", kind="http", config={})
    with pytest.raises(ConnectorMisconfigured, match=r"config\.url: is required"):
        get_connector("broken")
    with pytest.raises(UnknownConnector):
        get_connector("missing")


def test_loading_a_connector_logs_no_secret(worker, http_peer, caplog):
    ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"token": TOKEN})
    http_peer.status, http_peer.answer = 500, f"bad token {TOKEN}".encode()
    Job.enqueue("tests.tasks_for_connectors.post_to", args=[{"n": 1}], connector="hook")
    with caplog.at_level(logging.DEBUG):
        worker.drain()
    assert caplog.records, "the failure was logged"
    assert TOKEN not in caplog.text
    assert isinstance(get_connector("hook"), HttpConnector)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"SECRET_KEYS": "one-key"}, "must be list or tuple"),
        ({"SECRET_KEYS": ["short"]}, "at least 32 characters"),
        ({"CONNECTOR_BUSY_DELAY": 0}, "number of seconds above 0"),
    ],
)
def test_bad_connector_settings_fail_the_system_check(value, fragment, settings):
    from django_pgjobs.checks import check_settings

    settings.PGJOBS = {**settings.PGJOBS, **value}
    found = [error.msg + " " + (error.hint or "") for error in check_settings()]
    assert any(fragment in message for message in found), found
