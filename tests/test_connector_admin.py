"""Admin for connectors and API tokens: secrets go in and never come out."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User

from django_pgjobs.api.tokens import digest
from django_pgjobs.models import ApiToken, Connector
from tests.factories import ConnectorFactory, connector_form

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-value-never-rendered"
ADD_URL = "/admin/pgjobs/connector/add/"


def test_a_connector_added_in_the_admin_stores_its_secret_encrypted(admin_client):
    response = admin_client.post(ADD_URL, connector_form(secrets=f"token={SECRET}"))
    assert response.status_code == 302, response.content.decode()[:2000]
    hook = Connector.objects.get(name="hook")
    assert hook.get_secrets() == {"token": SECRET}
    assert SECRET not in hook.encrypted_secrets


def test_no_admin_page_renders_a_stored_secret(admin_client):
    hook = ConnectorFactory(name="hook", secrets={"token": SECRET})
    for url in (
        "/admin/pgjobs/connector/",
        f"/admin/pgjobs/connector/{hook.pk}/change/",
        f"/admin/pgjobs/connector/{hook.pk}/history/",
        f"/admin/pgjobs/connector/{hook.pk}/delete/",
    ):
        page = admin_client.get(url).content.decode()
        assert SECRET not in page and hook.encrypted_secrets not in page, url
    assert (
        "Stored: token"
        in admin_client.get(f"/admin/pgjobs/connector/{hook.pk}/change/").content.decode()
    )


def test_a_form_with_errors_does_not_echo_the_secret_just_typed(admin_client):
    response = admin_client.post(
        ADD_URL, connector_form(config='{"url": 5}', secrets=f"token={SECRET}")
    )
    page = response.content.decode()
    assert response.status_code == 200 and "must be str" in page
    assert SECRET not in page
    assert not Connector.objects.exists()


def test_a_secret_typed_for_a_connector_whose_secrets_are_no_object_is_refused(admin_client):
    """Stored secrets that decrypt to no JSON object of secrets (a token made by hand
    with the key): typing a secret was a 500 (AttributeError in update_secrets); now
    the form says so, and 'clear secrets' starts over."""
    from tests.test_connectors import with_token_of

    hook = with_token_of(b"[1, 2]")
    url = f"/admin/pgjobs/connector/{hook.pk}/change/"
    response = admin_client.post(url, connector_form(secrets=f"token={SECRET}"))
    page = response.content.decode()
    assert response.status_code == 200 and "no JSON object of secrets" in page
    assert "clear secrets" in page and SECRET not in page
    assert Connector.objects.get(pk=hook.pk).encrypted_secrets == hook.encrypted_secrets
    form = connector_form(secrets=f"token={SECRET}", clear_secrets="on")
    assert admin_client.post(url, form).status_code == 302
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {"token": SECRET}


def test_an_empty_secrets_field_keeps_them_and_name_equals_removes_one(admin_client):
    hook = ConnectorFactory(name="hook", secrets={"token": SECRET, "api_key": "k-123456"})
    url = f"/admin/pgjobs/connector/{hook.pk}/change/"
    assert admin_client.post(url, connector_form(description="edited")).status_code == 302
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {
        "token": SECRET,
        "api_key": "k-123456",
    }
    assert admin_client.post(url, connector_form(secrets="api_key=")).status_code == 302
    assert Connector.objects.get(pk=hook.pk).get_secrets() == {"token": SECRET}


def test_a_malformed_secret_line_and_an_unknown_secret_name_are_refused(admin_client):
    page = admin_client.post(ADD_URL, connector_form(secrets="no equals sign")).content.decode()
    assert "line 1: expected NAME=value" in page
    page = admin_client.post(ADD_URL, connector_form(secrets="tokn=x")).content.decode()
    assert "tokn: unknown secret" in page
    assert not Connector.objects.exists()


def test_the_test_connection_action_reports_what_it_saw(admin_client, http_peer):
    good = ConnectorFactory(name="good", config={"url": http_peer.url}, secrets={"token": SECRET})
    bad = ConnectorFactory(name="bad", config={"url": "http://127.0.0.1:9/"})
    response = admin_client.post(
        "/admin/pgjobs/connector/",
        {"action": "test_connection", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    page = response.content.decode()
    # Named as stored: the admin's template capitalises each message's first letter,
    # and "good: ..." showed as "Good: ...", a connector of another name.
    assert "Connector good: HEAD http://127.0.0.1:" in page and "answered 200" in page
    assert "Connector bad: ConnectorError" in page and "refused" in page
    assert SECRET not in page
    assert http_peer.received[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_the_test_connection_action_needs_the_change_permission(client, http_peer):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connector"))
    client.force_login(viewer)
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url})
    client.post(
        "/admin/pgjobs/connector/",
        {"action": "test_connection", "_selected_action": [hook.pk]},
        follow=True,
    )
    assert http_peer.received == []


def test_a_token_added_in_the_admin_is_shown_once_and_stored_hashed(admin_client):
    response = admin_client.post(
        "/admin/pgjobs/apitoken/add/",
        {
            "name": "cron",
            "queues": '["default"]',
            "can_enqueue": "on",
            "can_read": "on",
            "active": "on",
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plain = re.search(r"pgj_[A-Za-z0-9_-]{20,}", response.content.decode()).group(0)
    token = ApiToken.objects.get(name="cron")
    assert token.token_hash == digest(plain) and token.queues == ["default"]
    change = admin_client.get(f"/admin/pgjobs/apitoken/{token.pk}/change/").content.decode()
    listing = admin_client.get("/admin/pgjobs/apitoken/").content.decode()
    assert plain not in change + listing and token.prefix in listing


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("mail, default", ["mail", "default"]), ("reports", ["reports"]), ("*", ["*"])],
)
def test_token_queues_may_be_typed_as_the_command_takes_them(admin_client, typed, stored):
    # A newcomer typed `reports` (issue_api_token takes --queues mail,default) and got
    # "Enter a valid JSON." alone.
    admin_client.post(
        "/admin/pgjobs/apitoken/add/",
        {"name": "cron", "queues": typed, "connectors": "hook", "active": "on"},
    )
    token = ApiToken.objects.get(name="cron")
    assert token.queues == stored and token.connectors == ["hook"]


def test_a_new_token_form_shows_empty_lists_not_null(admin_client):
    page = admin_client.get("/admin/pgjobs/apitoken/add/").content.decode()
    assert re.search(r'id="id_queues">\s*\[\]</textarea>', page)
    assert re.search(r'id="id_connectors">\s*\[\]</textarea>', page)


def test_token_queues_that_are_broken_json_say_what_to_enter(admin_client):
    response = admin_client.post(
        "/admin/pgjobs/apitoken/add/", {"name": "x", "queues": '["mail"', "active": "on"}
    )
    assert "Enter names separated by commas (mail, default)" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_token_queues_must_be_queue_names(admin_client):
    response = admin_client.post(
        "/admin/pgjobs/apitoken/add/", {"name": "x", "queues": '["bad name"]', "active": "on"}
    )
    assert response.status_code == 200 and "a list of queue names" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_a_token_in_the_admin_locks_it_out(admin_client, client):
    from django_pgjobs.api.tokens import issue

    token, plain = issue("old", ["*"])
    admin_client.post(
        "/admin/pgjobs/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )
    response = client.get("/jobs/1", headers={"Authorization": f"Bearer {plain}"})
    assert response.status_code == 401
