"""Credentials in a connector's plain config never reach an admin page.

The rules refuse credentials in a config being written (a URL's userinfo, an
Authorization header, a header or query parameter named as a credential), but a row
written by SQL, or saved before a rule, still holds them: its change page, for those
who may edit it and those who may only view it, shows them masked. A masked value
posted back unchanged keeps the stored one: an edit of another field saves, and a
credential the rules refuse is refused again, never replaced by the mask.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection

from django_pgjobs.connectors.shown_config import shown_config
from django_pgjobs.models import Connector
from django_pgjobs.redaction import REDACTED
from tests.factories import ConnectorFactory, connector_form, stored_as_before
from tests.test_hardening_secrets import leaks

pytestmark = pytest.mark.django_db

SECRET = "Pa55-w0rd-zz9x-y"
KEY = "Plain-k3y-9f2c77x"

#: Stored configs holding credentials, past the rules.
STORED = {
    "userinfo": {"url": f"http://mallory:{SECRET}@127.0.0.1:9/hook"},
    "authorization": {"url": "http://127.0.0.1:9/hook", "headers": {"Authorization": SECRET}},
    "api key header": {"url": "http://127.0.0.1:9/hook", "headers": {"X-Api-Key": SECRET}},
    "query": {"url": f"http://127.0.0.1:9/hook?api_key={SECRET}&page=2"},
}


def page_of(client, connector: Connector) -> str:
    return client.get(f"/admin/pgjobs/connector/{connector.pk}/change/").content.decode()


@pytest.mark.parametrize("config", STORED.values(), ids=STORED)
def test_a_stored_credential_is_not_shown_on_the_change_page(admin_client, config):
    hook = stored_as_before(ConnectorFactory(name="hook"), config)
    page = page_of(admin_client, hook)
    assert "127.0.0.1:9/hook" in page
    assert leaks(page, SECRET) == []


@pytest.mark.parametrize("config", STORED.values(), ids=STORED)
def test_a_stored_credential_is_not_shown_to_staff_who_may_only_view(client, config):
    hook = stored_as_before(ConnectorFactory(name="hook"), config)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connector"))
    client.force_login(viewer)
    page = page_of(client, hook)
    assert "127.0.0.1:9/hook" in page
    assert leaks(page, SECRET) == []


def test_an_edit_that_leaves_a_masked_credential_as_shown_keeps_the_stored_one(admin_client):
    config = {"url": f"http://127.0.0.1:9/hook?api_key={KEY}", "headers": {"X-Api-Key": SECRET}}
    hook = stored_as_before(ConnectorFactory(name="hook"), config)
    shown = shown_config(hook.config)
    assert SECRET not in json.dumps(shown) and KEY not in json.dumps(shown)
    posted = connector_form(description="edited", config=json.dumps(shown))
    response = admin_client.post(f"/admin/pgjobs/connector/{hook.pk}/change/", posted)
    assert response.status_code == 302, response.content.decode()[:3000]
    hook.refresh_from_db()
    assert hook.description == "edited" and hook.config == config


def test_a_masked_header_kept_beside_an_edited_one_keeps_its_value(admin_client):
    config = {"url": "http://127.0.0.1:9/hook", "headers": {"X-Api-Key": SECRET, "X-A": "1"}}
    hook = stored_as_before(ConnectorFactory(name="hook"), config)
    edited = {"url": "http://127.0.0.1:9/hook", "headers": {"X-Api-Key": REDACTED, "X-A": "2"}}
    posted = connector_form(config=json.dumps(edited))
    response = admin_client.post(f"/admin/pgjobs/connector/{hook.pk}/change/", posted)
    assert response.status_code == 302, response.content.decode()[:3000]
    hook.refresh_from_db()
    assert hook.config["headers"] == {"X-Api-Key": SECRET, "X-A": "2"}


def test_a_refused_credential_left_as_shown_is_refused_again_without_being_shown(admin_client):
    hook = stored_as_before(ConnectorFactory(name="hook"), STORED["userinfo"])
    shown = shown_config(hook.config)
    posted = connector_form(config=json.dumps(shown))
    response = admin_client.post(f"/admin/pgjobs/connector/{hook.pk}/change/", posted)
    page = response.content.decode()
    assert response.status_code == 200 and "must not carry credentials" in page
    assert leaks(page, SECRET) == []
    hook.refresh_from_db()
    assert hook.config == STORED["userinfo"]


def test_a_value_typed_over_the_mask_is_saved_as_typed(admin_client):
    hook = stored_as_before(ConnectorFactory(name="hook"), STORED["userinfo"])
    posted = connector_form(config=json.dumps({"url": "http://127.0.0.1:9/new"}))
    response = admin_client.post(f"/admin/pgjobs/connector/{hook.pk}/change/", posted)
    assert response.status_code == 302
    hook.refresh_from_db()
    assert hook.config == {"url": "http://127.0.0.1:9/new"}


def test_a_config_without_credentials_is_shown_as_stored():
    config = {"url": "http://127.0.0.1:9/hook?page=2", "headers": {"X-A": "1"}, "timeout": 3}
    assert shown_config(config) == config
    for odd in ([1, 2], "text", None, {"headers": [1]}):
        assert shown_config(odd) == odd


@pytest.mark.parametrize("depth", [400, 900, 3000])
def test_a_config_nested_deep_is_shown_without_its_credentials(admin_client, client, depth):
    """Nested past what a walk of it can recurse through (written by SQL): its page
    still renders, for editors and viewers, and shows no credential."""
    hook = ConnectorFactory(name="hook")
    nested = "[" * depth + json.dumps(f"http://mallory:{SECRET}@127.0.0.1:9/") + "]" * depth
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pgjobs_connector SET config = %s::jsonb", [nested])
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connector"))
    client.force_login(viewer)
    for who in (admin_client, client):
        response = who.get(f"/admin/pgjobs/connector/{hook.pk}/change/")
        assert response.status_code == 200
        assert leaks(response.content.decode(), SECRET) == []


def test_an_edit_inside_a_value_that_keeps_its_mask_is_refused_not_saved_with_it(admin_client):
    """A URL whose page= was edited and whose masked api_key= was left as shown is no
    longer the URL shown, so it can't be put back: saved, the key became ********."""
    hook = stored_as_before(ConnectorFactory(name="hook"), STORED["query"])
    shown = shown_config(hook.config)
    edited = {"url": shown["url"].replace("page=2", "page=3")}
    posted = connector_form(config=json.dumps(edited))
    response = admin_client.post(f"/admin/pgjobs/connector/{hook.pk}/change/", posted)
    page = response.content.decode()
    assert response.status_code == 200 and "type the value again" in page
    assert leaks(page, SECRET) == []
    hook.refresh_from_db()
    assert hook.config == STORED["query"]
