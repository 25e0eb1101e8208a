"""Secrets a task reads itself, off a connector's row (``Connector.get_secrets()``),
are masked in what its job leaves behind as those of a connector it loads: its error,
its result, the worker's log lines. Nothing registered them: a task that read them so
and failed with one, or returned it, left it in the job's row for anyone to read."""

from __future__ import annotations

import json
import logging

import pytest

from django_pgjobs import Job
from django_pgjobs.models import Connector
from django_pgjobs.redaction import REDACTED
from django_pgjobs.worker import Worker
from tests import test_hardening_secrets
from tests.factories import ConnectorFactory
from tests.test_hardening_secrets import leaks

#: Every payload on the events channel while a test runs (a fixture).
events = test_hardening_secrets.events

TOKEN = "Rd-7f3e/9+a=b&c?d é-tok"
PIN = 84731920551  # a secret stored as a JSON number
READ = "tests.tasks_for_connectors.read_secrets_of"


@pytest.fixture
def stored(transactional_db) -> Connector:
    return ConnectorFactory(name="vault", secrets={"token": TOKEN, "pin": PIN})


def _all_of(job: Job) -> str:
    job.refresh_from_db()
    return json.dumps([job.errors, job.result])


@pytest.mark.parametrize("fail", [True, False], ids=["error", "result"])
def test_secrets_a_task_reads_off_a_connectors_row_are_masked(stored, events, caplog, fail):
    caplog.set_level(logging.DEBUG)
    job = Job.enqueue(READ, args=["vault", fail], max_attempts=2)
    worker = Worker(concurrency=1)
    worker.drain()
    if fail:  # the retry's log line quotes the error too
        Job.objects.filter(pk=job.pk).update(run_at=job.created_at)
        worker.drain()
    shown = _all_of(job)
    assert ("the server said" in shown) is fail and REDACTED in shown, shown
    surfaces = {"row": shown, "log": caplog.text, "events": "\n".join(events)}
    for name, text in surfaces.items():
        assert leaks(text, TOKEN) == [], name
        assert str(PIN) not in text, name
    if not fail:
        job.refresh_from_db()
        assert job.result["secrets"] == {"token": REDACTED, "pin": REDACTED}


def test_secrets_read_outside_a_job_are_the_values_stored(stored):
    """Outside a job (a view, a shell) get_secrets() returns them as it always did."""
    assert Connector.objects.get(name="vault").get_secrets() == {"token": TOKEN, "pin": PIN}


def test_what_a_job_reads_does_not_mask_another_jobs_output(stored):
    """Registered with the job that read them: the next job's result is its own."""
    reader = Job.enqueue(READ, args=["vault", False])
    other = Job.enqueue("tests.tasks_for_tests.unique_report", args=[str(PIN)])
    Worker(concurrency=1).drain()
    other.refresh_from_db()
    assert REDACTED in _all_of(reader) and other.result == f"report {PIN}"
