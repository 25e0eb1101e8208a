"""Bad PGJOBS settings fail the system check with a message that says the fix."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_pgjobs import tasks
from django_pgjobs.checks import check_settings, check_task_queues
from django_pgjobs.models import Queue
from tests import conftest
from tests.factories import QueueFactory


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
        ({"POLL_INTERVAL": 0}, "number of seconds above 0"),
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


#: Durations no process can wait or reach back: NaN passed "<= 0" (every comparison of
#: NaN is False), then a worker sleeping NaN seconds or a heartbeat every inf seconds
#: (taken for dead, its jobs run twice) met them only when it ran.
ODD_SECONDS = [float("nan"), float("inf"), 1e20, 10**400]


@pytest.mark.parametrize(
    "key",
    [
        "POLL_INTERVAL",
        "HEARTBEAT_INTERVAL",
        "WORKER_STALE_AFTER",
        "RESCUE_INTERVAL",
        "PRUNE_AFTER",
        "PRUNE_INTERVAL",
        "CONNECTOR_BUSY_DELAY",
    ],
)
@pytest.mark.parametrize("value", [*ODD_SECONDS, 0, -1])
def test_a_duration_setting_no_process_can_use_is_refused(key, value, settings):
    found = messages({key: value}, settings)
    assert any(f"PGJOBS[{key!r}] must be a number of seconds above 0" in m for m in found), found


def test_an_odd_poll_interval_hides_no_stale_limit_shorter_than_two_heartbeats(settings):
    # Only the two compared settings must be numbers of seconds for the comparison.
    found = messages(
        {"POLL_INTERVAL": 0, "HEARTBEAT_INTERVAL": 10, "WORKER_STALE_AFTER": 15}, settings
    )
    assert any("PGJOBS['POLL_INTERVAL'] must be" in m for m in found), found
    assert any("at least twice HEARTBEAT_INTERVAL" in m for m in found), found


@pytest.mark.parametrize(
    "key, value",
    [
        ("PRUNE_AFTER", 100 * 365 * 24 * 3600),  # finished jobs kept a century
        ("PRUNE_INTERVAL", 365 * 24 * 3600),
        ("POLL_INTERVAL", 0.001),
        ("WORKER_STALE_AFTER", 365 * 24 * 3600),
    ],
)
def test_long_and_short_durations_in_range_pass(key, value, settings):
    assert messages({key: value}, settings) == []


@pytest.mark.parametrize("value", [*ODD_SECONDS, -1])
def test_a_shutdown_timeout_no_worker_can_wait_is_refused(value, settings):
    found = messages({"SHUTDOWN_TIMEOUT": value}, settings)
    assert any("PGJOBS['SHUTDOWN_TIMEOUT'] must be a number of seconds from 0" in m for m in found)
    assert messages({"SHUTDOWN_TIMEOUT": 0}, settings) == []  # hand running jobs back at once


def test_a_prune_after_past_a_century_says_how_to_turn_pruning_off(settings):
    (found,) = messages({"PRUNE_AFTER": 1e11}, settings)
    assert "at most 3153600000" in found and "PRUNE_INTERVAL" in found and "None" in found


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


# -- a task's queue that no queue has (pgjobs.W002) -------------------------------------

REPORTS = "tests.test_checks.build_report"


@pytest.fixture
def reports_task() -> Iterator[str]:
    """A task of queue "reports", which the test settings' QUEUES lack."""
    tasks.task(name=REPORTS, queue="reports")(lambda: None)
    yield REPORTS
    tasks._registry.pop(REPORTS, None)


def queue_warnings(databases=("default",)) -> list:
    return [w for w in check_task_queues(databases=list(databases)) if w.id == "pgjobs.W002"]


@pytest.mark.django_db
def test_a_tasks_queue_in_neither_settings_nor_table_is_warned_about(reports_task, capsys):
    # It enqueued nothing (UnknownQueue) and `check` said nothing about it.
    (warning,) = queue_warnings()
    assert warning.msg == (
        f"Task {REPORTS} names queue 'reports', which is neither in PGJOBS['QUEUES'] nor "
        "a queue of the admin (Background jobs → Queues): enqueueing raises UnknownQueue."
    )
    assert warning.hint.startswith("Add 'reports': {} to PGJOBS['QUEUES']")
    # `check --database default` (and `migrate`) say so; a plain `check` reads no table.
    call_command("check", databases=["default"])
    assert "pgjobs.W002" in capsys.readouterr().err
    call_command("check")
    assert "pgjobs.W002" not in capsys.readouterr().err


@pytest.mark.django_db
def test_a_queue_of_the_table_or_the_settings_is_no_mistake(reports_task, settings):
    QueueFactory(name="reports")  # created in the admin: workers serve it by default
    assert queue_warnings() == []
    Queue.objects.filter(name="reports").delete()
    settings.PGJOBS = {**settings.PGJOBS, "QUEUES": {**settings.PGJOBS["QUEUES"], "reports": {}}}
    with CaptureQueriesContext(connection) as queried:
        assert queue_warnings() == []
    assert queried.captured_queries == [], "every queue declared: nothing to read"


@pytest.mark.django_db
def test_without_queues_of_ones_own_the_hint_is_a_whole_queues_that_passes(reports_task, settings):
    # "Add 'reports': {} to PGJOBS['QUEUES']", done literally where PGJOBS has no QUEUES,
    # gave QUEUES = {"reports": {}}: no "default" queue left, and E007 failed the check.
    settings.PGJOBS = {key: value for key, value in settings.PGJOBS.items() if key != "QUEUES"}
    (warning,) = queue_warnings()
    line = re.search(r"^Set (PGJOBS\['QUEUES'\] = \{.*\}) \(migrate", warning.hint)
    assert line, warning.hint
    assert line.group(1) == "PGJOBS['QUEUES'] = {'default': {}, 'reports': {}}"
    settings.PGJOBS = {**settings.PGJOBS, "QUEUES": ast.literal_eval(line.group(1).split(" = ")[1])}
    assert check_settings() == [] and queue_warnings() == []


def test_a_default_queue_left_out_of_queues_says_the_line_to_add(settings):
    (said,) = messages({"QUEUES": {"reports": {}}}, settings)
    assert said == (
        "PGJOBS['DEFAULT_QUEUE'] 'default' is not in PGJOBS['QUEUES']. Add 'default': {} "
        "to PGJOBS['QUEUES'] (a QUEUES of your own replaces the default one, "
        "{'default': {}}), or set PGJOBS['DEFAULT_QUEUE'] to one of its queues: jobs "
        "whose task names no queue go there."
    )


@pytest.mark.django_db
def test_the_queue_check_runs_only_for_the_jobs_database(reports_task):
    assert queue_warnings(databases=()) == []
    assert len(queue_warnings(databases=("default",))) == 1


@pytest.mark.django_db
def test_before_migrate_a_tasks_queue_is_missing_and_the_transaction_stays_usable(reports_task):
    # migrate runs the checks before it creates the table: no table, no row, so
    # the queue is missing still after it (it creates the rows of QUEUES only).
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE pgjobs_queue RENAME TO pgjobs_queue_away")
        assert len(queue_warnings()) == 1
        cursor.execute("ALTER TABLE pgjobs_queue_away RENAME TO pgjobs_queue")
    assert Queue.objects.filter(name="default").exists()


CHECK_WITH_A_TASK = """
from django_pgjobs import task
from django.core.management import call_command

task(name="tests.build_report", queue="reports")(lambda: None)
call_command("check", databases=["default"])
print("checked")
"""


def test_the_queue_check_passes_when_the_database_is_unreachable():
    # Nothing listens on port 1: the check can't tell, so it says nothing and fails nothing.
    env = {**conftest.test_database_env(), "DATABASE_URL": "postgres://root@127.0.0.1:1/none"}
    ran = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CHECK_WITH_A_TASK],
        cwd=conftest.ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0 and "checked" in ran.stdout, ran.stdout + ran.stderr
    assert "W002" not in ran.stdout + ran.stderr
