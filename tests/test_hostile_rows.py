"""Odd rows and hostile calls against everything but the admin (tests/test_admin_hostile.py).

Rows written by SQL (within the tables' CHECKs, or by a replica session that skips
the foreign keys' triggers) go through a real worker, the scheduler, maintenance,
the HTTP API and ``manage.py pgjobs``: none of them fails, the other jobs keep
flowing, and the odd one ends in a clear state with a clear error. Hostile calls on
the Python API raise the documented error, write nothing and leave the caller's
transaction usable.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from django_pgjobs import maintenance
from django_pgjobs.models import Job, JobDependency
from tests.test_hardening_rows import sql

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"
GATHER = "tests.tasks_for_tests.takes_anything"


@pytest.fixture
def checked_at_once() -> Iterator[None]:
    """Foreign keys checked at each statement's end, as at the commit that a test's
    transaction never reaches (the job tables' keys are deferred)."""
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    yield
    sql("SET CONSTRAINTS ALL DEFERRED")


def states() -> dict[int, str]:
    return dict(Job.objects.values_list("pk", "state"))


def age(*ids: int, days: int = 30) -> None:
    sql(
        "UPDATE pgjobs_job SET finished_at = now() - make_interval(days => %s) WHERE id = ANY(%s)",
        [days, list(ids)],
    )


# -- prune and dependency edges --------------------------------------------------------------


def test_prune_deletes_a_finished_pipeline_with_its_edges(worker, checked_at_once):
    """Every finished pipeline made prune fail: the edges kept naming the deleted
    jobs, and their foreign key refused the batch (so nothing old was ever pruned
    again, the batch holding such a job failing every time)."""
    first = Job.enqueue(ADD, [1, 2])
    then = Job.enqueue(ADD, [3, 4], depends_on=[first])
    plain = Job.enqueue(ADD, [5, 6])
    assert worker.drain() == {"completed": 3}
    age(first.pk, then.pk, plain.pk)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 3
    assert not Job.objects.exists() and not JobDependency.objects.exists()


def test_prune_keeps_a_dependency_until_its_dependents_have_finished(worker, checked_at_once):
    """A gather job reads its dependencies' results when it runs: one finished long
    ago stays while the gather job waits for another."""
    early = Job.enqueue(ADD, [1, 2])
    late = Job.enqueue(ADD, [3, 4], run_at=timezone.now() + timedelta(days=1))
    gather = Job.enqueue(GATHER, depends_on=[early, late], pass_results=True)
    worker.drain()
    age(early.pk)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 0
    assert worker.drain(now=timezone.now() + timedelta(days=1, seconds=1)) == {"completed": 2}
    gather.refresh_from_db()
    assert gather.state == "completed" and gather.result == 1  # its one argument: results
    assert Job.objects.get(pk=gather.pk).meta["pass_results"] is True
    age(early.pk, late.pk, gather.pk)
    assert maintenance.prune_finished(timezone.now(), timedelta(days=7)) == 3
    assert not JobDependency.objects.exists()
