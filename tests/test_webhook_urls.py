"""A webhook whose URL is its credential (Slack's, Discord's, a Telegram bot's, a Teams
channel's): refused in an ``http`` connector's plain config, which the admin shows, and
taken as the ``url`` secret instead, which no message, page or answer shows."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from django_pgjobs import Job
from django_pgjobs.api.tokens import issue
from django_pgjobs.connectors import ConnectorError, get_connector
from django_pgjobs.models import Connector
from tests.admin_helpers import action
from tests.factories import ConnectorFactory, connector_form, stored_as_before
from tests.test_hardening_secrets import leaks

pytestmark = pytest.mark.django_db

CALL = "django_pgjobs.connectors.tasks.call"
ADD_URL = "/admin/pgjobs/connector/add/"
TOKEN = "Whk9tOkEn3xYz7QpLmN2vB8c"

#: Webhook URLs as each service's documentation has them copied: the path is the key.
WEBHOOKS = {
    "slack": f"https://hooks.slack.com/services/T0AAA1111/B0BBB2222/{TOKEN}",
    "discord": f"https://discord.com/api/webhooks/123456789012345678/{TOKEN}",
    "discordapp": f"https://discordapp.com/api/v10/webhooks/1234567/{TOKEN}",
    "telegram": f"https://api.telegram.org/bot123456:{TOKEN}/sendMessage",
    "teams": f"https://contoso.webhook.office.com/webhookb2/a1b2@c3d4/IncomingWebhook/{TOKEN}/e5",
    "zapier": f"https://hooks.zapier.com/hooks/catch/123456/{TOKEN}/",
}


@pytest.mark.parametrize("service", WEBHOOKS)
def test_a_webhook_url_with_its_key_in_the_path_is_refused_in_plain_config(service, admin_client):
    config = {"url": WEBHOOKS[service]}
    with pytest.raises(ValidationError) as refused:
        Connector(name="hook", kind="http", config=config).full_clean()
    (problem,) = refused.value.message_dict["config"]
    assert "url secret" in problem and TOKEN not in problem, problem
    with pytest.raises(ValidationError, match="url secret"):
        Connector.objects.create(name="hook", kind="http", config=config)
    page = admin_client.post(ADD_URL, connector_form(config=json.dumps(config))).content.decode()
    assert "url secret" in page  # (the form shows back what was typed into it)
    assert not Connector.objects.exists()


def test_other_urls_on_those_hosts_and_elsewhere_are_kept():
    for url in (
        "https://slack.com/api/chat.postMessage",
        "https://discord.com/api/v10/channels/123/messages",
        "https://api.example.com/services/T0AAA/B0BBB/orders",
    ):
        Connector(name="hook", kind="http", config={"url": url}).full_clean()


def secret_hook(http_peer, **config) -> tuple[Connector, str]:
    """An http connector whose URL, a webhook's with its key in the path, is a secret."""
    path = f"/services/T0AAA1111/B0BBB2222/{TOKEN}"
    hook = Connector(name="hook", kind="http", config=config)
    origin = urllib.parse.urljoin(http_peer.url, "/").rstrip("/")
    hook.set_secrets({"url": origin + path + "?sig=" + TOKEN[::-1]})
    hook.full_clean()
    hook.save()
    return hook, path


def test_the_url_secret_is_called_and_no_surface_shows_it(http_peer, worker, admin_client):
    hook, path = secret_hook(http_peer)
    # The server echoes the path it was called at, as a 404 page does.
    http_peer.status, http_peer.content_type = 404, "text/plain"
    http_peer.answer = f"no webhook at {path} ({urllib.parse.quote(path, safe='')})".encode()
    job = Job.enqueue(CALL, kwargs={"payload": {"text": "hi"}}, connector="hook", max_attempts=1)
    worker.drain()
    job.refresh_from_db()
    assert http_peer.received[0].path == f"{path}?sig={TOKEN[::-1]}"
    error = job.errors[0]["error"]
    assert "POST http://127.0.0.1:" in error and "answered 404" in error, error

    token = issue("t", ["*"], connectors=["*"])[1]
    surfaces = {
        "job row": json.dumps([job.errors, job.result]),
        "api": Client()
        .get(f"/jobs/{job.pk}", headers={"Authorization": f"Bearer {token}"})
        .content.decode(),
        "admin job": admin_client.get(f"/admin/pgjobs/job/{job.pk}/change/").content.decode(),
        "admin connector": admin_client.get(
            f"/admin/pgjobs/connector/{hook.pk}/change/"
        ).content.decode(),
        "admin test": admin_client.post(
            "/admin/pgjobs/connector/", action("test_connection", hook), follow=True
        ).content.decode(),
    }
    assert "answered 404" in surfaces["admin test"]
    for secret in (TOKEN, TOKEN[::-1], path):
        found = {name: leaks(text, secret) for name, text in surfaces.items()}
        assert {name: how for name, how in found.items() if how} == {}, secret


def test_a_failed_call_outside_a_job_names_no_part_of_the_url_secret(http_peer):
    secret_hook(http_peer, timeout=2)
    http_peer.status = 500
    with pytest.raises(ConnectorError) as failed:
        get_connector("hook").request({"text": "hi"}, path="more")
    assert "answered 500" in str(failed.value) and "/more" in str(failed.value)
    assert leaks(str(failed.value), TOKEN) == []
    # Connection refused: the error names the host, not the path.
    Connector.objects.get(name="hook").delete()
    hook = Connector(name="hook", kind="http", config={})
    hook.set_secrets({"url": f"http://127.0.0.1:9/services/T0/B0/{TOKEN}"})
    hook.save()
    with pytest.raises(ConnectorError) as failed:
        get_connector("hook").request({"text": "hi"})
    assert "http://127.0.0.1:9/" in str(failed.value)
    assert leaks(str(failed.value), TOKEN) == []


def test_the_url_secret_must_be_an_http_url_and_alone():
    hook = Connector(name="hook", kind="http", config={})
    with pytest.raises(ValidationError) as refused:
        hook.set_secrets({"url": f"hooks.slack.com/services/{TOKEN}"})
    assert "url" in str(refused.value) and TOKEN not in str(refused.value)
    hook.set_secrets({"url": f"https://hooks.slack.com/services/{TOKEN}"})
    hook.config = {"url": "https://hooks.slack.com/"}
    with pytest.raises(ValidationError, match="url secret"):
        hook.full_clean()
    hook.config = {}
    hook.full_clean()
    with pytest.raises(ValidationError, match="is required"):
        Connector(name="hook2", kind="http", config={}).full_clean()


def test_a_row_saved_with_a_webhook_url_in_plain_config_keeps_working(http_peer, worker):
    hook = ConnectorFactory(name="hook", config={"url": "http://127.0.0.1:9/"})
    url = WEBHOOKS["slack"].replace("https://hooks.slack.com", http_peer.url.rstrip("/"))
    # The host is what the rule reads: a row saved by an earlier release, pointed here.
    stored_as_before(hook, {"url": WEBHOOKS["slack"]})
    hook.config["timeout"] = 5
    hook.full_clean()
    hook.save()  # an edit that adds no credential is saved
    stored_as_before(hook, {"url": url})
    job = Job.enqueue(CALL, kwargs={"payload": {"n": 1}}, connector="hook")
    worker.drain()
    job.refresh_from_db()
    assert job.state == "completed", job.errors


def test_the_admin_takes_a_webhook_url_as_the_url_secret(admin_client):
    url = WEBHOOKS["slack"]
    form = connector_form(config="{}", secrets=f"url={url}?a=b")  # a "=" in the value
    assert admin_client.post(ADD_URL, form).status_code == 302
    hook = Connector.objects.get(name="hook")
    assert hook.config == {} and hook.get_secrets() == {"url": f"{url}?a=b"}
    page = admin_client.get(f"/admin/pgjobs/connector/{hook.pk}/change/").content.decode()
    assert TOKEN not in page


@pytest.mark.parametrize("service", WEBHOOKS)
def test_a_webhook_url_in_any_job_s_error_has_its_path_masked(worker, service):
    """No connector: a task posts to a webhook URL of its own settings, and its HTTP
    library names the URL in its error ("404 Client Error: Not Found for url: ...")."""
    url = WEBHOOKS[service]
    job = Job.enqueue(
        "tests.tasks_for_tests.raises_odd",
        args=[f"404 Client Error: Not Found for url: {url}"],
        max_attempts=1,
    )
    worker.drain()
    job.refresh_from_db()
    stored = json.dumps(job.errors)
    host = urllib.parse.urlsplit(url).hostname
    assert f"Not Found for url: https://{host}/********" in stored, stored
    assert leaks(stored, TOKEN) == []


def test_the_key_of_a_telegram_bot_s_url_secret_is_masked_alone(http_peer):
    """The path's segment is ``bot<id>:<key>``; a server may echo the key alone."""
    origin = urllib.parse.urljoin(http_peer.url, "/").rstrip("/")
    hook = Connector(name="bot", kind="http", config={})
    hook.set_secrets({"url": f"{origin}/bot123456:{TOKEN}/sendMessage"})
    hook.save()
    http_peer.status, http_peer.answer = 401, f"invalid key {TOKEN}".encode()
    with pytest.raises(ConnectorError) as failed:
        get_connector("bot").request({"text": "hi"})
    assert "invalid key ********" in str(failed.value), str(failed.value)


def test_the_admin_s_help_says_the_url_secret_may_stand_in(admin_client):
    page = admin_client.get(ADD_URL).content.decode()
    assert "url (required, or the url secret)" in page
    assert "token, password, api_key, url" in page
