"""A connector's stored secrets as SQL may leave them: a token cut short or altered,
and names that don't match what the token holds. A job using it, the admin's *Test
connection* and the rotation command each say what is wrong and what to do, never a
secret; nothing is sent with secrets missing.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from django_pgjobs import Job
from django_pgjobs.connectors import ConnectorMisconfigured, get_connector
from django_pgjobs.models import Connector
from django_pgjobs.secrets import SecretsUnreadable, encrypt
from tests.admin_helpers import action, messages_of
from tests.factories import ConnectorFactory

pytestmark = pytest.mark.django_db

TOKEN = "t0ken-zz91-qq77"
CALL = "django_pgjobs.connectors.tasks.call"


def damaged(token: str) -> dict[str, str]:
    return {
        "cut short": token[: len(token) // 2],
        "cut at its end": token[:-5],
        "not base64": "not a token!",
        "empty-ish": "x",
        "other version": "A" + token[1:],
    }


@pytest.mark.parametrize("how", list(damaged("x" * 120)))
def test_a_damaged_token_is_said_to_be_damaged_not_a_missing_key(admin_client, http_peer, how):
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url}, secrets={"token": TOKEN})
    Connector.objects.filter(pk=hook.pk).update(
        encrypted_secrets=damaged(hook.encrypted_secrets)[how]
    )
    said = "stored token is damaged"
    with pytest.raises(SecretsUnreadable, match=said) as raised:
        get_connector("hook")
    assert "key that encrypted them removed" not in str(raised.value)
    with pytest.raises(CommandError, match=said):
        call_command("rotate_connector_secrets", stdout=io.StringIO())
    tested = admin_client.post(
        "/admin/pgjobs/connector/", action("test_connection", hook), follow=True
    )
    assert any(said in message for message in messages_of(tested))
    assert not http_peer.received


def test_a_token_altered_within_its_shape_keeps_the_key_advice():
    """A whole token whose signature fails: a wrong key or an altered token look alike."""
    hook = ConnectorFactory(name="hook", secrets={"token": TOKEN})
    token = hook.encrypted_secrets
    altered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    Connector.objects.filter(pk=hook.pk).update(encrypted_secrets=altered)
    with pytest.raises(SecretsUnreadable, match="key that encrypted them removed"):
        get_connector("hook")


@pytest.mark.parametrize(
    ("names", "held", "said"),
    [
        (["token"], None, "lists 'token', which the stored secrets don't hold"),
        (["token", "api_key"], {"token": TOKEN}, "lists 'api_key', which the stored"),
        ([], {"token": TOKEN}, "don't list 'token', which the stored secrets hold"),
    ],
)
def test_secret_names_that_dont_match_the_secrets_fail_the_job_sending_nothing(
    worker, http_peer, names, held, said
):
    """A restore or an UPDATE that left one column and not the other: the admin said
    "Stored: token" while jobs called without it."""
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url})
    Connector.objects.filter(pk=hook.pk).update(
        secret_names=names, encrypted_secrets=encrypt(held) if held else ""
    )
    with pytest.raises(ConnectorMisconfigured, match=said) as raised:
        get_connector("hook")
    assert TOKEN not in str(raised.value) and "enter the secrets again" in str(raised.value)
    job = Job.enqueue(CALL, kwargs={"payload": {}}, connector="hook", max_attempts=1)
    worker.drain()
    job.refresh_from_db()
    assert said in job.errors[-1]["error"] and TOKEN not in job.errors[-1]["error"]
    assert not http_peer.received
