"""A queue declared in PGJOBS["QUEUES"] whose row already exists: the row wins, and the
difference is said (a newcomer raised a concurrency in settings and nothing changed)."""

from __future__ import annotations

import logging

import pytest

from django_pgjobs.models import Queue
from django_pgjobs.queues import sync_from_settings
from tests.test_worker_output import manage

pytestmark = pytest.mark.django_db


def stored(name, **fields):
    # update_or_create: the test project's own settings may have created the row.
    return Queue.objects.update_or_create(name=name, defaults=fields)[0]


def declare(settings, **queues):
    settings.PGJOBS = {"QUEUES": {"default": {}, **queues}}


def test_a_declaration_that_differs_from_its_row_is_warned_about_and_changes_nothing(
    settings, caplog
):
    stored("mail", concurrency=2, priority=0)
    declare(settings, mail={"concurrency": 4, "priority": 5})
    with caplog.at_level(logging.WARNING, logger="django_pgjobs"):
        assert sync_from_settings(warn=True) == []
    row = Queue.objects.get(name="mail")
    assert (row.concurrency, row.priority) == (2, 0), "the database wins"
    [record] = [r for r in caplog.records if "differs" in r.getMessage()]
    message = record.getMessage()
    assert "queue 'mail' in PGJOBS['QUEUES'] differs from its row" in message
    assert "concurrency: 4 in settings, 2 in the database" in message
    assert "priority: 5 in settings, 0 in the database" in message
    assert "change the queue in the admin" in message
    assert message.endswith("or the declaration to match it"), "an operator's tuning stays"


def test_a_declaration_its_row_matches_says_nothing(settings, caplog):
    stored("mail", concurrency=2)
    declare(settings, mail={"concurrency": 2})
    with caplog.at_level(logging.WARNING, logger="django_pgjobs"):
        sync_from_settings(warn=True)
    assert not [r for r in caplog.records if "differs" in r.getMessage()]


def test_pausing_a_declared_queue_is_no_difference_to_warn_of(settings, caplog):
    # Pausing is an operator's act, not a tuning: a declared queue paused in the admin
    # (or resumed) must not warn at every worker start.
    stored("mail", paused=True)
    declare(settings, mail={"paused": False})
    with caplog.at_level(logging.WARNING, logger="django_pgjobs"):
        sync_from_settings(warn=True)
    assert not [r for r in caplog.records if "differs" in r.getMessage()]
    assert Queue.objects.get(name="mail").paused


def test_a_new_declaration_is_created_without_a_warning(settings, caplog):
    declare(settings, reports={"concurrency": 3})
    with caplog.at_level(logging.WARNING, logger="django_pgjobs"):
        assert sync_from_settings(warn=True) == ["reports"]
    assert Queue.objects.get(name="reports").concurrency == 3
    assert not [r for r in caplog.records if "differs" in r.getMessage()]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runworker_with_processes_says_it_once_not_once_per_process():
    stored("mail", concurrency=7)  # the test project declares {"concurrency": 2}
    result = manage("runworker", "--processes", "2", "--burst")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "differs from its row" in line]
    assert len(said) == 1, result.stderr
    assert "queue 'mail'" in said[0] and "concurrency: 2 in settings, 7 in the database" in said[0]
    assert result.stderr.count(" started: database ") == 2, result.stderr


def test_without_warn_a_sync_says_nothing(settings, caplog):
    # What each worker process (and `pgjobs pause`) does: the warning is migrate's and
    # runworker's, said once.
    stored("mail", concurrency=2)
    declare(settings, mail={"concurrency": 4})
    with caplog.at_level(logging.WARNING, logger="django_pgjobs"):
        sync_from_settings()
    assert not [r for r in caplog.records if "differs" in r.getMessage()]
