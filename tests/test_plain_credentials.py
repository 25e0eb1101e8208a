"""A credential never goes where the admin shows it: not in an ``http`` connector's
plain headers or URL query string (whatever the header's name), nor a password an
``smtp`` connector can't send. Refused by every entry point that writes a connector
(``full_clean()``, ``save()``, ``set_secrets()``, the admin's form); a row saved
before these rules keeps working. (The HTTP API manages no connectors.)"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from django_pgjobs import Job
from django_pgjobs.connectors import get_connector
from django_pgjobs.connectors.errors import ConnectorMisconfigured
from django_pgjobs.models import Connector
from django_pgjobs.secrets import encrypt
from django_pgjobs.states import JobState
from tests.factories import ConnectorFactory, connector_form, stored_as_before

pytestmark = pytest.mark.django_db

CALL = "django_pgjobs.connectors.tasks.call"
KEY = "k3y-in-plain-sight-4242"
ADD_URL = "/admin/pgjobs/connector/add/"

CREDENTIAL_HEADERS = [
    "X-Api-Key",
    "Api-Key",
    "X-Auth-Token",
    "X-Access-Token",
    "X-Api-Secret",
    "X-Hub-Signature-256",
    "X-Amz-Security-Token",
    "X-Csrf-Token",
    "X-Session-Id",
    "x-apikey",
    "X-Password",
    "X-Api-Key2",  # a number after the word: a second key is a key
    "X-Token1",
    "clientSecret2",
    "x-accesskey",
    "X-Passkey",
    "X-Secretkey",
    "X-Privatekey",
    "X-Oauth",
    "X-Authorisation",
    "X-Userpassword",  # a password after any word: none is "bypass"
    "x-dbpasswd",
    # Beside the words above that carry none: still a credential's name.
    "X-Session",
    "X-Session-Token",
    "sessionid",
    "X-Authenticated-Token",
    "X-Authentication",
    "X-Session-Affinity-Key",
]
PLAIN_HEADERS = [
    "Accept",
    "Content-Type",
    "User-Agent",
    "X-Request-Id",
    "Idempotency-Key",
    "X-GitHub-Api-Version",
    "Cache-Control",
    "X-Cache-Bypass",
    # Words that end in a credential's word and name none: refused by 2121631's rule.
    "X-Monkey",
    "X-Turkey",
    "X-Whiskey-Brand",
    "X-Hockey-Team",
    "X-Concession-Id",
    "X-Obsession",
    "X-Hotkey",
    # Words that start with "auth" and name no credential: a thing's author.
    "X-Author",
    "X-Authored-By",
    "X-Authority",
    # Who a proxy authenticated, and where a load balancer keeps a session: an
    # identity and a routing hint, no secret ("session" alone or with "id" is one).
    "X-Authenticated-User",
    "X-Authenticated-Userid",
    "X-Session-Affinity",
    "SessionAffinity",
    # "code" names a credential only whole or after a word that makes it one (below).
    "country_code",
    "X-Zip-Code",
    "postcode",
    "barcode",
    "encode",
]
#: Query parameters real services take credentials in, beside those named as headers
#: are: Azure Functions' function key (``code``), OAuth's authorization code, a JWT.
CREDENTIAL_PARAMETERS = ["code", "Code", "jwt", "access_code", "passcode", "verificationCode"]


def http_config(url: str = "https://api.example.com/v1", **headers: str) -> dict:
    return {"url": url, "headers": headers}


# -- the rule -----------------------------------------------------------------------------


def test_credential_names_are_told_apart_from_plain_ones():
    from django_pgjobs.redaction import names_a_credential

    assert all(names_a_credential(name) for name in CREDENTIAL_HEADERS)
    assert all(names_a_credential(name) for name in ("access_token", "apiKey", "sig", "passwd"))
    assert all(names_a_credential(name) for name in CREDENTIAL_PARAMETERS)
    plain = [*PLAIN_HEADERS, "X-Idempotency-Key", "idempotency_key", "api-version", "page"]
    assert not any(names_a_credential(name) for name in plain)


#: Names of real credentials the words-and-compounds rule missed while masking in
#: logged URLs caught them by a word anywhere: a token, a secret, a password, a
#: signature, a cookie, an authorization, an api key or a session id inside one word.
RUN_TOGETHER_CREDENTIALS = [
    "mytoken",
    "ghtoken",
    "accesstokenvalue",
    "mysecret",
    "webhooksecretvalue",
    "dbpwd",
    "reqsignature",
    "mycookie",
    "proxyauthorization",
    "googleapikey",
    "apikeyvalue",
    "JSESSIONID",
    "PHPSESSID",
    "basicauth",
    "privkey",
]


def masked_in_a_logged_url(name: str) -> bool:
    from django_pgjobs.redaction import mask_credentials

    said = mask_credentials(f"GET https://api.example.com/v1?page=2&{name}=v4lue-42 failed")
    assert ("v4lue-42" in said) != ("********" in said), said
    return "********" in said


@pytest.mark.parametrize(
    "name", [*CREDENTIAL_HEADERS, *PLAIN_HEADERS, *CREDENTIAL_PARAMETERS,
             *RUN_TOGETHER_CREDENTIALS, "api-version", "page", "X-Idempotency-Key"],
)  # fmt: skip
def test_one_rule_names_a_credential_in_a_header_and_in_a_logged_url(name):
    """A logged URL's ``?X-Authenticated-User=`` was masked (a word anywhere:
    "auth"), while the header of that name is an ordinary one: each name is a
    credential's for both or for neither."""
    from django_pgjobs.connectors.http import credential_headers

    assert masked_in_a_logged_url(name) == bool(credential_headers({name: "v"}))


@pytest.mark.parametrize("name", RUN_TOGETHER_CREDENTIALS)
def test_a_credential_s_word_run_together_with_others_still_names_one(name):
    from django_pgjobs.redaction import names_a_credential

    assert names_a_credential(name)
    assert masked_in_a_logged_url(name)
    with pytest.raises(ValidationError, match="names a credential"):
        Connector.objects.create(name="hook", kind="http", config=http_config(**{name: KEY}))
    assert not Connector.objects.exists()


# -- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", CREDENTIAL_HEADERS)
def test_a_credential_header_is_refused_by_full_clean_and_by_save(header):
    hook = Connector(name="hook", kind="http", config=http_config(**{header: KEY}))
    with pytest.raises(ValidationError) as refused:
        hook.full_clean()
    (problem,) = refused.value.message_dict["config"]
    assert header in problem and "api_key_header" in problem and KEY not in problem
    with pytest.raises(ValidationError, match="names a credential"):
        Connector.objects.create(name="hook", kind="http", config=http_config(**{header: KEY}))
    assert not Connector.objects.exists()
    with connection.cursor() as cursor:  # the caller's transaction is still usable
        cursor.execute("SELECT 1")


def test_plain_headers_and_an_api_version_parameter_are_kept(http_peer):
    headers = dict.fromkeys(PLAIN_HEADERS, "v")
    url = http_peer.url + "?api-version=2024-01-01"
    hook = Connector(name="hook", kind="http", config=http_config(url, **headers))
    hook.full_clean()
    hook.save()
    get_connector("hook").request({"x": 1})
    assert http_peer.received[0].headers["Idempotency-Key"] == "v"
    assert http_peer.received[0].path.endswith("?api-version=2024-01-01")


def test_the_admin_refuses_a_credential_header_and_writes_nothing(admin_client):
    config = json.dumps(http_config(**{"X-Api-Key": KEY, "Accept": "x"}))
    page = admin_client.post(ADD_URL, connector_form(config=config)).content.decode()
    assert "X-Api-Key" in page and "names a credential" in page
    assert not Connector.objects.exists()


# -- the URL's query string ----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "api_key=",
        "token=",
        "access_token=",
        "X-Amz-Signature=",
        "a=1;sig=",
        "key2=",
        "code=",  # an Azure Functions URL as the portal copies it
        "jwt=",
        "access_code=",
    ],
)
def test_a_credential_in_the_url_s_query_string_is_refused(query, admin_client):
    url = f"https://api.example.com/v1?{query}{KEY}"
    hook = Connector(name="hook", kind="http", config={"url": url})
    with pytest.raises(ValidationError) as refused:
        hook.full_clean()
    (problem,) = refused.value.message_dict["config"]
    assert problem.startswith("url: the query parameter") and KEY not in problem
    with pytest.raises(ValidationError, match="names a credential"):
        Connector.objects.create(name="hook", kind="http", config={"url": url})
    page = admin_client.post(ADD_URL, connector_form(config=json.dumps({"url": url}))).content
    assert b"names a credential" in page
    assert not Connector.objects.exists()


def test_a_code_among_other_words_is_no_credential():
    url = "https://api.example.com/v1?country_code=US&zip_code=10115&encode=1"
    Connector(name="hook", kind="http", config={"url": url}).full_clean()


def test_a_code_in_an_error_s_url_is_masked():
    from django_pgjobs.redaction import mask_credentials

    text = "401 for url: https://fn.azurewebsites.net/api/hook?code=Zm9vYmFy==&jwt=eyJ.x.y"
    assert mask_credentials(text) == (
        "401 for url: https://fn.azurewebsites.net/api/hook?code=********&jwt=********"
    )


# -- rows saved before the rules ------------------------------------------------------------


def legacy_hook(url: str, **config) -> Connector:
    """A row as an earlier release saved it: with its key in the plain config."""
    hook = ConnectorFactory(name="hook", config={"url": "http://127.0.0.1:9/"})
    return stored_as_before(hook, {"url": url, **config})


def test_a_row_saved_before_the_rule_keeps_working(worker, http_peer, admin_client):
    hook = legacy_hook(http_peer.url + "?api_key=q", headers={"X-Api-Key": KEY})
    job = Job.enqueue(CALL, kwargs={"payload": {"n": 1}}, connector="hook")
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.COMPLETED, job.errors
    assert http_peer.received[0].headers["X-Api-Key"] == KEY

    change = f"/admin/pgjobs/connector/{hook.pk}/change/"
    assert admin_client.get(change).status_code == 200
    hook.update_secrets({"token": "a-token-5678"})  # code may still rotate its secrets
    hook.save()
    # An edit that adds no credential is saved, in the admin and in code.
    same = connector_form(config=json.dumps(hook.config), description="edited")
    assert admin_client.post(change, same).status_code == 302
    hook.refresh_from_db()
    hook.config["timeout"] = 5
    hook.full_clean()
    hook.save()
    # One that adds a credential is refused, naming the one it adds.
    hook.config["headers"]["X-Auth-Token"] = "t"
    with pytest.raises(ValidationError, match="the header 'X-Auth-Token' names a credential"):
        hook.save()
    assert "X-Auth-Token" not in Connector.objects.get(pk=hook.pk).config["headers"]


def test_an_edit_that_removes_one_of_a_stored_row_s_credentials_is_saved():
    # The edit the rule asks for: refused while the row kept another credential, as
    # the message naming the rest ("the header 'X-Api-Key' names a credential") was
    # not the stored row's ("the headers 'X-Api-Key', 'X-Auth-Token' name ...").
    hook = legacy_hook(
        "http://127.0.0.1:9/?api_key=q&token=r", headers={"X-Api-Key": KEY, "X-Auth-Token": "t"}
    )
    del hook.config["headers"]["X-Auth-Token"]
    hook.config["url"] = "http://127.0.0.1:9/?api_key=q"
    hook.full_clean()
    hook.save()
    stored = Connector.objects.get(pk=hook.pk).config
    assert stored["headers"] == {"X-Api-Key": KEY} and stored["url"].endswith("?api_key=q")
    # Renaming one in another case adds none: header names are read in any case.
    hook.config["headers"] = {"x-api-key": KEY}
    hook.full_clean()
    hook.save()


# -- smtp: a password smtplib can send ------------------------------------------------------


def smtp_connector(**config) -> Connector:
    return Connector(name="mailer", kind="smtp", config={"host": "127.0.0.1", **config})


def test_a_password_that_is_not_ascii_is_refused_where_it_is_set(admin_client):
    mailer = smtp_connector(username="mailer")
    with pytest.raises(ValidationError) as refused:
        mailer.set_secrets({"password": "pässwörd-1"})
    assert refused.value.message_dict == {
        "secrets": [
            "password: the password must be ASCII: smtplib sends the login in ASCII only "
            "(every send would fail)"
        ]
    }
    assert mailer.encrypted_secrets == "" and mailer.secret_names == []
    mailer.set_secrets({"password": "ascii-1"})
    mailer.save()
    with pytest.raises(ValidationError, match="must be ASCII"):
        mailer.update_secrets({"password": "pässwörd-1"})
    assert Connector.objects.get(pk=mailer.pk).get_secrets() == {"password": "ascii-1"}

    config = json.dumps({"host": "127.0.0.1", "username": "mailer"})
    data = connector_form(name="mailer2", kind="smtp", config=config, secrets="password=pässwörd-1")
    page = admin_client.post(ADD_URL, data).content.decode()
    assert "must be ASCII" in page and "pässwörd" not in page
    assert not Connector.objects.filter(name="mailer2").exists()


def test_a_username_that_is_not_ascii_is_refused_when_written():
    with pytest.raises(ValidationError, match="the username must be ASCII"):
        smtp_connector(username="müller").full_clean()
    with pytest.raises(ValidationError, match="the username must be ASCII"):
        smtp_connector(username="müller").save()
    assert not Connector.objects.exists()


def test_a_stored_password_that_is_not_ascii_fails_clearly_without_connecting(worker, smtp_peer):
    mailer = ConnectorFactory(
        name="mailer",
        kind="smtp",
        config={"host": smtp_peer.host, "port": smtp_peer.port, "username": smtp_peer.username},
    )
    secret = "pässwörd-2"
    Connector.objects.filter(pk=mailer.pk).update(
        encrypted_secrets=encrypt({"password": secret}), secret_names=["password"]
    )
    payload = {"subject": "s", "body": "b", "to": "x@example.com"}
    job = Job.enqueue(CALL, kwargs={"payload": payload}, connector="mailer")
    worker.drain()
    job.refresh_from_db()
    error = job.errors[0]["error"]
    assert "ConnectorMisconfigured" in error and "password must be ASCII" in error, error
    assert "UnicodeEncodeError" not in error and "\\xe4" not in error and "ä" not in error
    assert smtp_peer.logins == [] and smtp_peer.messages == []
    with pytest.raises(ConnectorMisconfigured, match=r"secrets\.password"):
        get_connector("mailer").test()
