"""Bad PGJOBS settings fail the system check with a message that says the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from django_pgjobs.checks import check_settings


def messages(settings_value, settings):
    settings.PGJOBS = settings_value
    return [error.msg + " " + (error.hint or "") for error in check_settings()]


def test_defaults_pass(settings):
    assert messages({}, settings) == []


def test_a_misspelt_key_names_the_right_one(settings):
    assert messages({"POLL_INTERVALL": 1}, settings) == [
        "Unknown PGJOBS key 'POLL_INTERVALL'. Did you mean 'POLL_INTERVAL'?"
    ]


def test_a_misspelt_queue_option_names_the_right_one(settings):
    assert messages({"QUEUES": {"default": {"concurency": 2}}}, settings) == [
        "Unknown option(s) ['concurency'] for queue 'default'. "
        "Did you mean 'concurrency' for 'concurency'?"
    ]
    (unguessable,) = messages({"QUEUES": {"default": {"concurency": 2, "zzz": 1}}}, settings)
    assert "Known options: ['backoff_base'," in unguessable


def test_a_misspelt_key_hides_no_other_problem(settings):
    # Each typo was found only once the one before was fixed: a run of check per typo.
    found = messages(
        {"WORKER_CONCURENCY": 4, "QUEUES": {"default": {}, "mail": {"concurency": 2}}},
        settings,
    )
    assert len(found) == 2, found
    assert "Did you mean 'WORKER_CONCURRENCY'?" in found[0]
    assert "Did you mean 'concurrency' for 'concurency'?" in found[1]
    # A value of the wrong type still stops there: the checks after read it as its type.
    assert len(messages({"POLL_INTERVAL": "2", "QUEUES": {"default": {"x": 1}}}, settings)) == 1


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"MAX_ATTEMPTS": "5"}, "must be int"),
        ({"MAX_ATTEMPTS": 0}, "at least 1"),
        ({"POLL_INTERVAL": 0}, "greater than 0"),
        ({"BACKOFF": {"strategy": "random"}}, "backoff strategy is unknown"),
        ({"QUEUES": {"default": {}, "bad name": {}}}, "Invalid queue name"),
        ({"QUEUES": {"default": {"concurrancy": 2}}}, "Unknown option(s) ['concurrancy']"),
        ({"QUEUES": {"mail": {}}}, "DEFAULT_QUEUE"),
        ({"DATABASE": "other"}, "names no database"),
    ],
)
def test_bad_values_are_reported(value, fragment, settings):
    found = messages(value, settings)
    assert any(fragment in message for message in found), found


@pytest.mark.parametrize("value", ["a-secret-key", [("SECRET_KEYS", "a-secret-key")]])
def test_a_pgjobs_of_the_wrong_shape_is_named_and_no_value_shown(value, settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.PGJOBS = value if isinstance(value, list) else {"SECRET_KEYS": value}
    with pytest.raises(SystemCheckError) as refused:
        call_command("check")
    said = str(refused.value)
    expected = "must be list or tuple, not str" if isinstance(value, str) else "must be a dict"
    assert expected in said and "a-secret-key" not in said


def test_check_command_fails_on_bad_settings(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.PGJOBS = {"WORKER_CONCURENCY": 4}
    with pytest.raises(SystemCheckError, match="WORKER_CONCURRENCY"):
        call_command("check")


def test_a_negative_prefetch_is_refused(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.PGJOBS = {"WORKER_PREFETCH": -1}
    with pytest.raises(SystemCheckError, match="WORKER_PREFETCH"):
        call_command("check")


@pytest.mark.parametrize("key, value", [("WORKER_PREFETCH", 10**9), ("WORKER_CONCURRENCY", 10**8)])
def test_a_prefetch_or_concurrency_past_its_bound_is_refused(key, value, settings):
    (error,) = messages({key: value}, settings)
    assert error.startswith(f"PGJOBS[{key!r}] must be") and "10,000" in error


def test_a_listen_database_must_be_in_databases(settings):
    (error,) = messages({"LISTEN_DATABASE": "direct"}, settings)
    assert "'direct', which names no database in DATABASES" in error
    assert messages({"LISTEN_DATABASE": "default"}, settings) == []


def test_prepared_statements_through_a_pooler_are_warned_about(settings):
    settings.DATABASES["direct"] = dict(settings.DATABASES["default"])
    options = settings.DATABASES["default"].setdefault("OPTIONS", {})
    try:
        assert messages({"LISTEN_DATABASE": "direct"}, settings) == []
        options["prepare_threshold"] = 5
        (warning,) = check_settings()
        assert warning.id == "pgjobs.W001" and "Remove prepare_threshold" in warning.hint
        assert messages({}, settings) == [], "no LISTEN_DATABASE: no pooler said"
    finally:
        options.pop("prepare_threshold", None)
        del settings.DATABASES["direct"]


def test_a_setting_read_is_kept_until_the_setting_is_replaced(settings):
    """conf.get keeps the PGJOBS dict it read: a change in place shows at once, a
    new dict (override_settings, pytest-django's ``settings``) once Django says so."""
    from django_pgjobs import conf

    settings.PGJOBS = {"MAX_ATTEMPTS": 3}
    assert conf.get("MAX_ATTEMPTS") == 3
    settings.PGJOBS["MAX_ATTEMPTS"] = 4
    assert conf.get("MAX_ATTEMPTS") == 4
    settings.PGJOBS = {}
    assert conf.get("MAX_ATTEMPTS") == conf.DEFAULTS["MAX_ATTEMPTS"]


WITHOUT_THE_APP = """
import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"])
django.setup()
from django_pgjobs import task

try:
    @task
    def send_welcome(user_id: int) -> None: ...
except Exception as error:
    print(type(error).__name__, "|", error)
"""


def test_a_task_in_a_project_without_the_app_says_to_install_it():
    # A newcomer who skipped INSTALLED_APPS got, from @task, Django's 'Model class
    # django_pgjobs.models.Queue doesn't declare an explicit app_label and isn't in an
    # application in INSTALLED_APPS'.
    ran = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_APP], capture_output=True, text=True, timeout=60
    )
    assert ran.stdout.strip() == (
        "ImproperlyConfigured | django_pgjobs is not installed: add 'django_pgjobs' to "
        "INSTALLED_APPS, then run `python manage.py migrate`."
    ), ran.stdout + ran.stderr
