"""The state machine is declared once and the database enforces the same table."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from django_pgjobs import transitions
from django_pgjobs.exceptions import InvalidOption, JobGone
from django_pgjobs.models import Job
from django_pgjobs.states import (
    ALLOWED,
    FINISHED,
    InvalidTransition,
    JobState,
    can_transition,
    sources_of,
)
from tests.factories import JobFactory
from tests.gone import completed_before_its_update, deleted_before_its_update

pytestmark = pytest.mark.django_db

STATES = [state.value for state in JobState]


def _transition_function() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'pgjobs_job_transitioned'")
        return cursor.fetchone()[0]


def test_the_database_encodes_exactly_the_declared_transitions():
    """The trigger's list of allowed moves, and its shortcut (each target state with
    the states allowed to reach it), are written out in SQL: both match ALLOWED."""
    source = _transition_function()
    declared = {f"{a}>{b}" for a, targets in ALLOWED.items() for b in targets}
    assert set(re.findall(r"'(\w+>\w+)'", source)) == declared
    reachable = {
        target: set(re.findall(r"'(\w+)'", sources))
        for target, sources in re.findall(r"WHEN '(\w+)' THEN ARRAY\[([^\]]*)\]", source)
    }
    assert reachable == {
        target: {target, *sources_of(target)} for target in JobState if sources_of(target)
    }


@pytest.mark.parametrize("from_state, to_state", list(itertools.permutations(STATES, 2)))
def test_the_database_refuses_what_the_state_machine_forbids(from_state, to_state):
    trait = {} if from_state == "available" else {from_state: True}
    job = JobFactory(**trait)
    update = {"state": to_state}
    if to_state == "executing":
        update["lease"] = "00000000-0000-0000-0000-000000000001"
    if can_transition(from_state, to_state):
        Job.objects.filter(pk=job.pk).update(**update)
    else:
        with pytest.raises(IntegrityError, match="cannot go from"), transaction.atomic():
            Job.objects.filter(pk=job.pk).update(**update)


def test_one_forbidden_move_among_many_fails_the_whole_statement():
    """The trigger sees a whole statement at once: one bad move among many fails all."""
    movable = [JobFactory() for _ in range(300)]
    finished = JobFactory(completed=True)
    everything = Job.objects.filter(pk__in=[j.pk for j in [*movable, finished]])
    bad_move = pytest.raises(IntegrityError, match=f"job {finished.pk} cannot go from completed")
    with bad_move, transaction.atomic():
        everything.update(state="cancelled")
    assert set(Job.objects.values_list("state", flat=True)) == {"available", "completed"}


def test_a_statement_moving_jobs_to_different_states_is_checked_job_by_job():
    """Jobs moved to several states at once are checked one by one: allowed moves
    pass together, and one forbidden move among them fails them all."""
    waiting, scheduled, finished = (
        JobFactory(waiting=True),
        JobFactory(scheduled=True),
        JobFactory(completed=True),
    )
    to_available_or_cancelled = Case(
        When(state="waiting", then=Value("cancelled")), default=Value("available")
    )
    Job.objects.filter(pk__in=[waiting.pk, scheduled.pk]).update(state=to_available_or_cancelled)
    assert dict(Job.objects.values_list("pk", "state")) == {
        waiting.pk: "cancelled",
        scheduled.pk: "available",
        finished.pk: "completed",
    }
    to_scheduled_or_available = Case(
        When(pk=finished.pk, then=Value("scheduled")), default=Value("available")
    )
    bad_move = pytest.raises(IntegrityError, match=f"job {finished.pk} cannot go from completed")
    with bad_move, transaction.atomic():
        Job.objects.update(state=to_scheduled_or_available)


def test_a_statement_that_changes_no_state_is_let_through():
    jobs = [JobFactory(completed=True) for _ in range(3)]
    assert Job.objects.update(priority=5) == len(jobs)


def test_a_job_id_can_not_change():
    job = JobFactory()
    with pytest.raises(IntegrityError, match="ids cannot change"), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(id=job.pk + 1000)


def test_an_executing_job_must_hold_a_lease():
    job = JobFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(state="executing")


def test_finished_jobs_can_only_be_retried():
    for state in FINISHED:
        assert ALLOWED[state] == {JobState.AVAILABLE}


@pytest.mark.parametrize("trait", ["completed", "discarded", "cancelled", "retryable", "scheduled"])
def test_retry_makes_a_job_available_now_with_an_attempt_left(trait):
    job = JobFactory(**{trait: True})
    job.retry()
    assert job.state == JobState.AVAILABLE
    assert job.max_attempts > job.attempt
    assert job.finished_at is None


def test_retry_of_an_executing_job_is_refused():
    job = JobFactory(executing=True)
    with pytest.raises(InvalidTransition):
        job.retry()


def test_a_refused_transition_names_its_states_as_they_are_stored():
    """A state given as a JobState read "cannot go from 'executing' to JobState.AVAILABLE"."""
    job = JobFactory(executing=True)
    with pytest.raises(InvalidTransition) as refused:
        job.retry()
    assert str(refused.value) == f"job {job.pk}: cannot go from 'executing' to 'available'"


def test_retry_of_a_job_read_before_its_attempts_reached_the_limit_is_refused():
    """The limit was checked on the attempt counter as read: one that SQL (or a worker)
    brought to 2**31 - 1 since made the UPDATE's attempt + 1 a DataError, "integer out
    of range", not InvalidTransition."""
    job = JobFactory(discarded=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgjobs_job SET attempt = 2147483647, max_attempts = 2147483647 WHERE id = %s",
            [job.pk],
        )
    with pytest.raises(InvalidTransition, match=r"cannot go from 'discarded' to 'available'$"):
        job.retry()
    assert Job.objects.get(pk=job.pk).state == JobState.DISCARDED  # the transaction goes on
    assert job.attempt == 2147483647  # read again: it says what it is now


@pytest.mark.parametrize("trait", ["waiting", "scheduled", "retryable", "executing"])
def test_cancel_stops_a_job_that_has_not_finished(trait):
    job = JobFactory(**{trait: True})
    job.cancel()
    assert job.state == JobState.CANCELLED and job.finished_at is not None
    assert job.lease is None


def test_cancel_leaves_a_finished_job_alone():
    job = JobFactory(completed=True)
    assert job.cancel().state == JobState.COMPLETED


def test_an_outcome_is_refused_once_the_lease_is_gone(worker):
    from django_pgjobs import transitions

    job = JobFactory(executing=True)
    stale = Job.objects.get(pk=job.pk)
    job.cancel()
    assert not transitions.complete(stale, result=1)
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED


# -- a job whose row is gone -------------------------------------------------------------


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_an_action_on_a_deleted_job_says_it_no_longer_exists(action):
    """retry() said "cannot go from 'discarded' to 'available'" (the state the row had
    when read), cancel() raised Job.DoesNotExist."""
    job = JobFactory(discarded=True) if action == "retry" else JobFactory(scheduled=True)
    Job.objects.filter(pk=job.pk).delete()
    with pytest.raises(JobGone) as refused:
        getattr(job, action)()
    assert str(refused.value) == f"job {job.pk} no longer exists (it was deleted or pruned)"
    assert not Job.objects.exists()


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_an_action_on_a_job_deleted_between_its_read_and_its_write_says_so(action):
    job = JobFactory(discarded=True) if action == "retry" else JobFactory(scheduled=True)
    with deleted_before_its_update(job.pk), pytest.raises(InvalidTransition) as refused:
        getattr(job, action)()
    assert isinstance(refused.value, JobGone)
    assert str(refused.value) == f"job {job.pk} no longer exists (it was deleted or pruned)"
    assert not Job.objects.exists()


# -- a completed job runs again only when the caller says so, in the UPDATE itself ----------


def test_retry_leaves_a_completed_job_alone_unless_told_to_include_it():
    job = JobFactory(completed=True)
    with pytest.raises(InvalidTransition):
        transitions.retry(job)
    assert job.state == JobState.COMPLETED
    transitions.retry(job, include_completed=True)
    assert job.state == JobState.AVAILABLE


def test_retry_of_a_job_that_completes_between_its_read_and_its_write_leaves_it_alone():
    """The check was the caller's (the command's "is it completed?") and the UPDATE took
    any retryable state: a job completed in between ran again."""
    job = JobFactory(retryable=True)
    with completed_before_its_update(job.pk), pytest.raises(InvalidTransition):
        transitions.retry(job)
    assert job.state == JobState.COMPLETED  # read again: it says what it is now
    assert Job.objects.get(pk=job.pk).state == JobState.COMPLETED


def test_retry_of_a_completed_job_by_a_cut_off_takes_only_a_completion_up_to_it():
    job = JobFactory(completed=True)
    shown = job.finished_at
    Job.objects.filter(pk=job.pk).update(finished_at=shown + timedelta(seconds=1))
    with pytest.raises(InvalidTransition):  # completed again after it was asked about
        transitions.retry(job, include_completed=shown)
    assert job.state == JobState.COMPLETED
    transitions.retry(job, include_completed=shown + timedelta(seconds=1))
    assert job.state == JobState.AVAILABLE


def test_retry_many_leaves_completed_jobs_alone_unless_told_and_by_a_cut_off():
    now = timezone.now()
    early = JobFactory(completed=True, finished_at=now - timedelta(minutes=1))
    late = JobFactory(completed=True, finished_at=now + timedelta(seconds=1))
    failed = JobFactory(discarded=True)
    every = Job.objects.filter(pk__in=[early.pk, late.pk, failed.pk])
    assert transitions.retry_many(every) == 1
    assert transitions.retry_many(every, include_completed=now) == 1
    assert [Job.objects.get(pk=j.pk).state for j in (early, late, failed)] == [
        JobState.AVAILABLE, JobState.COMPLETED, JobState.AVAILABLE
    ]  # fmt: skip
    assert transitions.retry_many(every, include_completed=True) == 1
    assert Job.objects.get(pk=late.pk).state == JobState.AVAILABLE


@pytest.mark.parametrize(
    "offset",
    [timedelta(hours=20), timedelta(hours=-23, minutes=-59), timedelta(hours=15, seconds=0.5)],
    ids=["+20:00", "-23:59", "+15:00:00.5"],
)
def test_a_cut_off_in_an_offset_postgresql_does_not_take_is_its_instant(offset):
    """Python takes UTC offsets up to 23:59, with fractions of a second; PostgreSQL only
    up to 15:59 and none: the cut-off, sent as given, failed the UPDATE (a DataError,
    the caller's transaction aborted)."""
    job = JobFactory(completed=True)
    finished = job.finished_at.astimezone(dt_timezone(offset))
    with transaction.atomic():
        with pytest.raises(InvalidTransition):
            job.retry(include_completed=finished - timedelta(seconds=1))
        assert transitions.retry_many(Job.objects.all(), include_completed=finished) == 1
    assert Job.objects.get(pk=job.pk).state == JobState.AVAILABLE


@pytest.mark.parametrize(
    "cut_off",
    [
        datetime(2030, 1, 1),  # no instant: was taken in TIME_ZONE, with a RuntimeWarning
        datetime(1, 1, 1, tzinfo=dt_timezone(timedelta(hours=14))),
        datetime.max.replace(tzinfo=UTC),
    ],
    ids=["naive", "year 1 +14:00", "datetime.max"],
)
def test_a_cut_off_no_row_holds_is_refused_changing_nothing(cut_off):
    job = JobFactory(completed=True)
    every = Job.objects.filter(pk=job.pk)
    with transaction.atomic():
        with pytest.raises(InvalidOption) as refused:
            job.retry(include_completed=cut_off)
        assert refused.value.field == "include_completed"
        with pytest.raises(InvalidOption) as refused:
            transitions.retry_many(every, include_completed=cut_off)
        assert refused.value.field == "include_completed"
        assert Job.objects.get(pk=job.pk).state == JobState.COMPLETED  # the transaction goes on


def test_job_retry_runs_a_completed_job_again_as_documented_unless_told_otherwise():
    """``Job.retry()`` is user code's: it ran completed jobs again, and still does."""
    job = JobFactory(completed=True)
    with pytest.raises(InvalidTransition):
        job.retry(include_completed=False)
    assert job.retry().state == JobState.AVAILABLE
