"""TenantMiddleware: the tenant current at enqueue is the tenant around the job, on
django-tenants' real schemas and with callables of one's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from django_pgjobs import Job
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.pipelines import enqueue_pipeline
from django_pgjobs.states import JobState
from testproject.demo.models import Run
from testproject.testdb import test_database_name as database_name
from tests.conftest import ROOT
from tests.conftest import test_database_env as database_env
from tests.middleware_for_tests import use_tenant
from tests.tasks_for_tests import fan_out_to_tenants, record_tenant

S = JobState
OWN_TENANCY = "tests.middleware_for_tests.tenants"


@pytest.fixture
def tenancy(settings):
    settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": [OWN_TENANCY]}


def tags() -> list[str]:
    return sorted(Run.objects.values_list("tag", flat=True))


@pytest.mark.django_db
def test_the_tenant_of_the_enqueue_is_the_tenant_of_the_run(tenancy, worker):
    with use_tenant("acme"):
        job = record_tenant.enqueue("job")
    record_tenant.enqueue("untenanted")
    assert Job.objects.get(pk=job.pk).meta == {"tenant": "acme"}
    worker.drain()
    assert tags() == ["job:acme", "untenanted:None"]


@pytest.mark.django_db
def test_meta_none_is_no_meta_and_gets_the_tenant_at_every_entry_point(tenancy):
    """A dict's or a JobSpec's ``"meta": None`` reached the middleware as None, which
    it took for a meta of another type (refused later) and left without the tenant:
    the job ran outside its tenant."""
    with use_tenant("acme"):
        jobs = [
            Job.enqueue(record_tenant.name, ["a"], meta=None),
            *Job.enqueue_many(
                [
                    {"task": record_tenant.name, "args": ["b"], "meta": None},
                    JobSpec(record_tenant.name, ["c"], meta=None),  # type: ignore[arg-type]
                ]
            ),
            *enqueue_pipeline(JobSpec(record_tenant.name, ["d"], meta=None))[0],  # type: ignore[arg-type]
        ]
    assert [Job.objects.get(pk=job.pk).meta.get("tenant") for job in jobs] == ["acme"] * 4


@pytest.mark.django_db
def test_jobs_a_job_enqueues_inherit_its_tenant_and_a_fan_out_gives_each_its_own(tenancy, worker):
    with use_tenant("acme"):
        fan_out_to_tenants.enqueue(["initech", "globex"])
        Job.enqueue(record_tenant.name, args=["explicit"], meta={"tenant": "hooli"})
    worker.drain()
    assert tags() == ["explicit:hooli", "fanned:globex", "fanned:initech"]


@pytest.mark.django_db
def test_a_stored_tenant_that_is_no_tenant_discards_the_job_rather_than_run_it_elsewhere(
    tenancy, worker
):
    job = record_tenant.enqueue("odd")
    Job.objects.filter(pk=job.pk).update(meta={"tenant": ["not", "a", "tenant"]})
    worker.drain()
    job.refresh_from_db()
    assert job.state == S.DISCARDED and "not a tenant" in job.errors[-1]["error"]
    assert tags() == []


# -- django-tenants, on real PostgreSQL schemas ---------------------------------------------


def tenants_project(database: str, *args: str, stdin: str | None = None) -> str:
    """``manage.py ARGS`` of tests/tenants_project on ``database``; returns its stdout."""
    url = database_env()["DATABASE_URL"].rsplit("/", 1)[0] + f"/{database}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1",
             "DJANGO_SETTINGS_MODULE": "tests.tenants_project.settings"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def tenants_database(db):
    """A database of its own for the django-tenants project, dropped afterwards."""
    pytest.importorskip("django_tenants")
    name = database_name("pgjobs_tenants")
    params = {k: v for k, v in connection.get_connection_params().items() if k != "dbname"}
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            admin.execute(drop)


SET_UP = """
from django_tenants.utils import schema_context
from django.utils import timezone
from django_pgjobs.models import Schedule
from tests.tenants_project.customers.models import Client
from tests.tenants_project.notes.jobs import note_every_tenant, write_note

Client.objects.create(schema_name="public", name="public")
for name in ("acme", "globex"):
    Client.objects.create(schema_name=name, name=name)  # creates and migrates its schema
    with schema_context(name):
        write_note.enqueue(f"hello {name}")
with schema_context("public"):
    write_note.enqueue("in public")  # the notes table exists in tenant schemas only
schedule = Schedule.objects.create(
    name="notes", cron="* * * * *", task=note_every_tenant.name, args=["from cron"]
)
tick = timezone.now().replace(second=0, microsecond=0)  # a tick of "* * * * *", past
Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=tick)
"""

READ_BACK = """
import json
from django_tenants.utils import schema_context
from django_pgjobs.models import Job
from tests.tenants_project.notes.models import Note

notes = {}
for name in ("acme", "globex"):
    with schema_context(name):
        notes[name] = sorted(Note.objects.values_list("text", "schema"))
jobs = sorted((job.meta.get("tenant"), job.state) for job in Job.objects.all())
print(json.dumps({"notes": notes, "jobs": jobs}))
"""


@pytest.mark.slow
def test_django_tenants_schemas_are_restored_around_jobs_and_cron_fan_outs(tenants_database):
    db = tenants_database
    tenants_project(db, "migrate_schemas", "--shared", "-v", "0")
    tenants_project(db, "shell", "-v", "0", stdin=SET_UP)
    tenants_project(db, "runscheduler", "--once", "--no-maintenance")
    tenants_project(db, "runworker", "--burst", "--concurrency", "2")
    found = json.loads(tenants_project(db, "shell", "-v", "0", stdin=READ_BACK))

    assert found["notes"] == {
        "acme": [["from cron", "acme"], ["hello acme", "acme"]],
        "globex": [["from cron", "globex"], ["hello globex", "globex"]],
    }
    # The cron job ran in public (where the scheduler enqueued it) and fanned out;
    # the job enqueued in public could not write a note there.
    assert sorted(map(tuple, found["jobs"])) == [
        ("acme", "completed"),
        ("acme", "completed"),
        ("globex", "completed"),
        ("globex", "completed"),
        ("public", "completed"),
        ("public", "retryable"),
    ]
