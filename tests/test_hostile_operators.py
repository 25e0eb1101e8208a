"""A careless operator's settings and clicks: what no system check stops (a WSGI server
runs none) is refused where it is used, saying why, writing nothing.
"""

from __future__ import annotations

import hashlib

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from django_pgjobs import Job, conf, secrets
from django_pgjobs.api.tokens import issue
from django_pgjobs.models import Connector
from tests.factories import ConnectorFactory, connector_form
from tests.test_connector_admin import ADD_URL, SECRET

pytestmark = pytest.mark.django_db

GOOD_KEY = hashlib.sha256(b"a key").hexdigest()  # 64 characters

#: SECRET_KEYS values the system check refuses (pgjobs.E003, E012).
BAD_KEYS = [GOOD_KEY, "short", ["short"], [GOOD_KEY, "short"], [GOOD_KEY, 5], {GOOD_KEY: 1}]


@pytest.mark.parametrize("keys", BAD_KEYS)
def test_secret_keys_no_check_would_pass_encrypt_nothing(settings, keys):
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": keys}
    connector = Connector(name="hook", kind="http", config={"url": "http://127.0.0.1:9/"})
    with pytest.raises(secrets.SecretKeysInvalid, match="at least 32 characters"):
        connector.set_secrets({"token": SECRET})
    assert connector.encrypted_secrets == ""


def test_stored_secrets_are_not_read_with_such_keys_either(settings):
    # A string for a list was read as one key per character: the admin encrypted with
    # the key "t", which anyone holding a dump could try.
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": [GOOD_KEY]}
    ConnectorFactory(name="hook", secrets={"token": SECRET})
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": GOOD_KEY}
    with pytest.raises(secrets.SecretKeysInvalid):
        Connector.objects.get(name="hook").get_secrets()


@pytest.mark.parametrize("clear", [False, True])
def test_the_connector_form_says_the_keys_are_wrong_and_saves_nothing(
    admin_client, settings, clear
):
    settings.PGJOBS = {**settings.PGJOBS, "SECRET_KEYS": GOOD_KEY}
    data = connector_form(secrets=f"token={SECRET}", **({"clear_secrets": "on"} if clear else {}))
    response = admin_client.post(ADD_URL, data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "PGJOBS[&#x27;SECRET_KEYS&#x27;] must be a list of strings of at least 32" in page
    assert SECRET not in page and GOOD_KEY not in page
    assert not Connector.objects.exists()


# -- PGJOBS values of the wrong type, where no check runs ---------------------------------


def test_api_tracebacks_as_a_string_sends_no_traceback_but_says_what_is_wrong(client, settings):
    job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
    Job.objects.filter(pk=job.pk).update(
        errors=[{"attempt": 1, "error": "E", "traceback": "File /srv/app/secret_path.py"}]
    )
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"])[1]}
    settings.PGJOBS = {**settings.PGJOBS, "API_TRACEBACKS": "False"}  # from os.environ
    with pytest.raises(ImproperlyConfigured) as refused:
        client.get(f"/jobs/{job.pk}", headers=bearer)
    assert str(refused.value) == "PGJOBS['API_TRACEBACKS'] must be bool, not str."


def test_a_limit_of_the_wrong_type_refuses_enqueue_clearly_and_writes_nothing(settings):
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": "1000000"}
    with transaction.atomic():
        with pytest.raises(ImproperlyConfigured, match=r"MAX_PAYLOAD_BYTES'\] must be int"):
            Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
        assert not Job.objects.exists()  # and the transaction goes on


def test_a_key_set_right_again_is_read(settings):
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": 1.5}
    with pytest.raises(ImproperlyConfigured):
        conf.get("MAX_PAYLOAD_BYTES")
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": 2_000}
    assert conf.get("MAX_PAYLOAD_BYTES") == 2_000


# -- enqueue_many given what is no batch of jobs --------------------------------------------

ADD = "testproject.demo.tasks.add"


@pytest.mark.parametrize(
    "batch, said",
    [
        ({"task": ADD, "args": [1, 2]}, "enqueue_many takes a list of JobSpecs or dicts"),
        (ADD, "enqueue_many takes a list of JobSpecs or dicts of Job.enqueue's arguments, not str"),
        (5, "not int"),
        ([None], "each job of enqueue_many must be a JobSpec or a dict of Job.enqueue's "
         "arguments, not NoneType None"),
        ([[ADD, [1, 2]]], "not list ['testproject.demo.tasks.add', [1, 2]]"),
        ([{"task": ADD, "args": [1, 2], "prio": 3}], "a job's dict has unknown key(s) 'prio'; "
         "known: task, args, kwargs, queue, priority"),
        ([{"args": [1, 2]}], "a job's dict has no 'task'"),
        ([{"task": ADD, "args": [1, 2]}] * 150 + [{"task": ADD, "prio": 1}],
         "unknown key(s) 'prio'"),  # a batch COPY streams
    ],
)  # fmt: skip
def test_enqueue_many_says_what_is_no_job_and_writes_nothing(batch, said):
    with transaction.atomic():
        with pytest.raises(TypeError) as refused:
            Job.enqueue_many(batch)
        assert said in str(refused.value)
        assert not Job.objects.exists()  # and the transaction goes on
