"""``manage.py pgjobs``: the operator's command line, its exit codes and its JSON."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from django_pgjobs import health
from django_pgjobs.exceptions import InvalidOption
from django_pgjobs.management.commands import pgjobs as pgjobs_command
from django_pgjobs.models import Job, Queue, Schedule, SchedulerProcess, WorkerProcess
from django_pgjobs.selection import InvalidSelection, JobFilter, parse_instant
from django_pgjobs.states import JobState
from tests.conftest import ROOT, cancelled_once_running, wait_until
from tests.conftest import test_database_env as database_env
from tests.factories import (
    JobFactory,
    QueueFactory,
    ScheduleFactory,
    WorkerProcessFactory,
    finished_jobs_analyzed,
)
from tests.gone import completed_before_its_update, deleted_before_its_update
from tests.test_hardening_rows import insert_job

S = JobState
pytestmark = pytest.mark.django_db


def pgjobs(*args: str, answer: str | None = None) -> tuple[int, str, str]:
    """Run ``manage.py pgjobs ARGS`` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    options = {"stdout": out, "stderr": err}
    if answer is not None:
        options["stdin"] = io.StringIO(answer)
    try:
        call_command("pgjobs", *args, **options)
        code = 0
    except CommandError as error:
        err.write(str(error))
        code = error.returncode
    return code, out.getvalue(), err.getvalue()


def as_json(*args: str) -> dict:
    code, out, err = pgjobs(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own, as a shell script runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "pgjobs", *args],
        cwd=ROOT,
        env={**os.environ, **database_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bare_pgjobs_lists_its_subcommands(db):
    # argparse said "the following arguments are required: SUBCOMMAND", naming none.
    done = run_cli()
    assert done.returncode == 2, done.stderr
    assert "name a subcommand: stats, list, show, retry, cancel, delete, pause, resume, " in (
        done.stderr
    )
    assert "schedules, prune or health (`manage.py pgjobs SUBCOMMAND --help` tells more)" in (
        done.stderr
    )


# -- reading -----------------------------------------------------------------------------


def test_stats_counts_each_queue_by_state_with_its_oldest_due_job_and_lists_workers():
    now = timezone.now()
    JobFactory(queue="default", run_at=now - timedelta(minutes=5))
    JobFactory(queue="default")
    JobFactory(queue="mail", executing=True)
    JobFactory(queue="mail", completed=True)
    WorkerProcessFactory(host="web-1", heartbeat_at=now)
    WorkerProcessFactory(host="web-2", heartbeat_at=now - timedelta(hours=1))

    report = as_json("stats")

    queues = {q["name"]: q for q in report["queues"]}
    assert queues["default"]["depth"]["available"] == 2
    assert 290 < queues["default"]["oldest_due_seconds"] < 400
    assert queues["mail"]["depth"]["executing"] == 1
    assert queues["mail"]["oldest_due_seconds"] is None
    assert report["finished"]["completed"] == {"count": 1, "exact": True}
    assert sorted((w["host"], w["alive"]) for w in report["workers"]) == [
        ("web-1", True),
        ("web-2", False),
    ]
    code, out, _ = pgjobs("stats")
    assert code == 0
    assert "default" in out and "workers: 1 alive, 1 stale" in out and "STALE" in out


def test_list_filters_by_state_queue_task_and_creation_time_newest_first():
    old = JobFactory(queue="mail", discarded=True)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    recent = JobFactory(queue="mail", discarded=True)
    JobFactory(queue="mail", completed=True)
    JobFactory(queue="default", discarded=True, task="testproject.demo.tasks.always_fails")

    def ids(*args: str) -> list[int]:
        return [job["id"] for job in as_json("list", *args)["jobs"]]

    assert ids("--state", "discarded", "--queue", "mail") == [recent.pk, old.pk]
    assert ids("--state", "discarded", "--queue", "mail", "--since", "1d") == [recent.pk]
    assert ids("--queue", "mail", "--before", "2d") == [old.pk]
    assert len(ids("--state", "discarded,completed")) == 4
    assert len(ids("--task", "testproject.demo.tasks.always_fails")) == 1
    listed = as_json("list", "--limit", "1")
    assert len(listed["jobs"]) == 1 and listed["more"] is True
    code, out, _ = pgjobs("list", "--state", "waiting")
    assert code == 0 and out.strip() == "no jobs with state waiting"
    # It said "no jobs with created since ...".
    code, out, _ = pgjobs("list", "--since", "2025-05-01T14:30+00:00", "--before", "2025-05-02")
    assert out.strip() == (
        "no jobs created since 2025-05-01T14:30:00+00:00, created before 2025-05-02T00:00:00+00:00"
    )
    code, out, _ = pgjobs("list", "--state", "waiting", "--since", "2025-05-01T14:30+00:00")
    assert out.strip() == "no jobs with state waiting, created since 2025-05-01T14:30:00+00:00"


@pytest.mark.parametrize("verb", ["list", "retry", "cancel", "delete"])
def test_a_task_no_one_registered_is_noted_when_nothing_matched(verb):
    # "no jobs" alone for a typo: the operator concluded the job was gone. A note on
    # stderr names the task registered under a like name; the exit stays 0.
    JobFactory(task="testproject.demo.tasks.add", discarded=True)
    yes = () if verb == "list" else ("--yes",)
    code, out, err = pgjobs(verb, "--task", "testproject.demo.tasks.ad", *yes)
    assert code == 0, err
    assert "no jobs with task testproject.demo.tasks.ad" in out
    assert err == (
        "note: no task registered here is called 'testproject.demo.tasks.ad' (did you mean "
        "'testproject.demo.tasks.add'?); jobs of a task no longer registered are matched "
        "all the same\n"
    )
    code, out, err = pgjobs(verb, "--task", "shop.tasks.nothing_like_it", *yes, "--json")
    assert code == 0 and json.loads(out), err
    assert err.startswith("note: no task registered here is called 'shop.tasks.nothing_like_it';")


@pytest.mark.parametrize("verb", ["list", "retry", "cancel", "delete"])
def test_a_task_no_longer_registered_is_a_target_without_a_note(verb):
    # Jobs of removed code are legitimate targets: matched, no note. A registered
    # task with no job: "no jobs", no note either.
    gone = JobFactory(task="shop.tasks.gone", scheduled=True)
    yes = () if verb == "list" else ("--yes",)
    code, out, err = pgjobs(verb, "--task", "shop.tasks.gone", *yes)
    assert (code, err) == (0, "")
    assert str(gone.pk) in out or "1 job(s)" in out
    code, out, err = pgjobs(verb, "--task", "testproject.demo.tasks.square", *yes)
    assert (code, err) == (0, "")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("args", [("--task", "gone.task"), ("--before", "20d", "--json")])
def test_list_stops_a_read_past_its_time_limit_and_says_what_to_narrow(
    second_connection, monkeypatch, args
):
    # A filter no index serves reads every row (--task of a task gone: 80 ms at 600,000
    # jobs; --before 20d: hundreds of thousands), and the list had no time limit, unlike
    # the admin's. The table locked elsewhere makes the read wait as a long scan would.
    monkeypatch.setattr(pgjobs_command, "LIST_SECONDS", 0.2)
    with transaction.atomic():
        with second_connection.transaction():
            second_connection.execute(f"LOCK TABLE {Job._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            code, out, err = pgjobs("list", *args)
        assert Job.objects.count() == 0  # the caller's transaction is still usable
    assert (code, out) == (1, "")
    assert err == (
        "no jobs listed: finding them took more than 0.2 s (no index serves --task, --since "
        "or --before alone); narrow the list with --state or --queue"
    )


@pytest.mark.django_db(transaction=True)
def test_list_cancelled_by_an_operator_says_so_not_that_it_was_slow(second_connection):
    # pg_cancel_backend sends the same SQLSTATE as the time limit (57014): the list
    # said "took more than 5 s" of a read an operator stopped after a few milliseconds.
    with transaction.atomic():
        with second_connection.transaction():
            second_connection.execute(f"LOCK TABLE {Job._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            with cancelled_once_running("gone.task"):
                code, out, err = pgjobs("list", "--task", "gone.task")
        assert Job.objects.count() == 0  # the caller's transaction is still usable
    assert (code, out) == (1, "")
    assert re.fullmatch(
        r"no jobs listed: the database cancelled the read after \d+\.\d s, before its time "
        r"limit of 5 s \(an operator's pg_cancel_backend\?\); run it again",
        err,
    ), err


def test_list_of_an_empty_table_says_no_jobs(db):
    code, out, _ = pgjobs("list")
    assert code == 0 and out.strip() == "no jobs"  # it said "no every job"


def test_show_prints_every_attempt_with_its_traceback():
    job = JobFactory(
        discarded=True,
        errors=[
            {"attempt": 1, "at": "t1", "error": "ValueError: first", "traceback": "Trace one"},
            {"attempt": 2, "at": "t2", "error": "ValueError: second", "traceback": "Trace two"},
        ],
        meta={"pipeline": "nightly"},
    )
    code, out, _ = pgjobs("show", str(job.pk))
    assert code == 0
    assert "ValueError: first" in out and "Trace two" in out and '"pipeline": "nightly"' in out
    shown = as_json("show", f"#{job.pk}")
    assert shown["id"] == job.pk and len(shown["errors"]) == 2 and shown["state"] == "discarded"


def test_show_prints_each_attempts_time_as_it_prints_the_jobs(settings):
    """Under TIME_ZONE = "Europe/Berlin" the job's times read 18:51+01:00 and its
    attempts' 17:50+00:00, as stored: one page, two clocks."""
    settings.TIME_ZONE = "Europe/Berlin"
    job = JobFactory(
        discarded=True,
        errors=[
            {"attempt": 1, "at": "2026-12-07T17:50:59.172993+00:00", "error": "ValueError: x"},
            {"attempt": 2, "at": "not a time", "error": "ValueError: y"},  # written by SQL
            {"attempt": 3, "at": "9999-12-31T23:30:00+00:00", "error": "ValueError: z"},
        ],
    )
    code, out, _ = pgjobs("show", str(job.pk))
    assert code == 0
    assert "attempt 1 at 2026-12-07T18:50:59.172993+01:00: ValueError: x" in out
    assert "attempt 2 at not a time: ValueError: y" in out
    assert "attempt 3 at 9999-12-31T23:30:00+00:00: ValueError: z" in out  # past 9999 in Berlin
    assert as_json("show", str(job.pk))["errors"][0]["at"] == "2026-12-07T17:50:59.172993+00:00"


def test_a_stored_row_of_any_shape_is_shown_without_driving_the_terminal():
    job = JobFactory(task="evil\x1b[2J\x07task", errors={"not": "a list"}, args={"x": 1})
    Job.objects.filter(pk=job.pk).update(meta=["odd"], result="\x1b]0;title\x07")
    code, out, _ = pgjobs("show", str(job.pk))
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x07task" in out
    code, out, _ = pgjobs("list")
    assert code == 0 and "\x1b" not in out


# -- changing ------------------------------------------------------------------------------


def test_retry_by_id_reports_each_job_and_fails_for_those_it_could_not_retry():
    discarded = JobFactory(discarded=True)
    executing = JobFactory(executing=True)
    code, out, _ = pgjobs("retry", str(discarded.pk), str(executing.pk), "99999")
    assert code == 1
    assert f"job {discarded.pk}: will run again" in out
    assert f"job {executing.pk}: is executing: can't retry it" in out
    assert "job 99999: no such job" in out
    discarded.refresh_from_db()
    executing.refresh_from_db()
    assert (discarded.state, executing.state) == (S.AVAILABLE, S.EXECUTING)


#: What running a completed job again does, as the admin's pages say it.
RUNS_AGAIN = "what each did the first time (a mail sent, a payment taken) happens again"


def test_retry_by_id_leaves_a_completed_job_alone_without_include_completed():
    """It ran it again at once (a second welcome mail, a second charge), where the
    admin asks first."""
    done, failed = JobFactory(completed=True), JobFactory(discarded=True)
    code, out, err = pgjobs("retry", str(done.pk), str(failed.pk))
    assert code == 1 and "some jobs could not be changed" in err
    assert (
        f"job {done.pk}: is completed: left alone; --include-completed runs it again, and "
        "what it did the first time (a mail sent, a payment taken) happens again"
    ) in out
    assert f"job {failed.pk}: will run again" in out
    assert [Job.objects.get(pk=j.pk).state for j in (done, failed)] == [S.COMPLETED, S.AVAILABLE]
    report = as_json("retry", str(done.pk), "--include-completed")
    assert report["results"] == [
        {"id": done.pk, "ok": True, "detail": "will run again", "state": S.AVAILABLE}
    ]


def test_retry_by_id_leaves_alone_a_job_that_completes_after_the_command_read_it():
    """The command checked "completed?" and then retried whatever it was: a job that
    completed in between ran again without --include-completed."""
    job = JobFactory(retryable=True)
    with completed_before_its_update(job.pk):
        code, out, _ = pgjobs("retry", str(job.pk))
    assert code == 1
    assert f"job {job.pk}: is completed: left alone; --include-completed runs it again" in out
    assert Job.objects.get(pk=job.pk).state == S.COMPLETED


def test_retry_by_filter_leaves_completed_jobs_alone_and_says_how_to_include_them():
    done = JobFactory.create_batch(2, queue="mail", completed=True)
    failed = JobFactory(queue="mail", discarded=True)
    code, out, err = pgjobs("retry", "--queue", "mail", answer="y\n")
    assert code == 0
    assert (
        "retry 3 job(s): jobs with queue mail? 2 of them completed: left alone "
        "(--include-completed runs them again)"
    ) in err
    assert out == (
        "1 job(s) will run again\n"
        "2 completed job(s) left alone: pass --include-completed to run them again "
        f"({RUNS_AGAIN})\n"
    )
    assert {Job.objects.get(pk=j.pk).state for j in done} == {S.COMPLETED}
    assert Job.objects.get(pk=failed.pk).state == S.AVAILABLE
    assert as_json("retry", "--queue", "mail", "--yes") == {
        "action": "retry", "matched": 3, "changed": 0, "completed_left_alone": 2,
        "key_held": 0, "key_held_ids": [],
    }  # fmt: skip


def test_retry_of_only_completed_jobs_asks_nothing_and_says_how_to_include_them():
    JobFactory.create_batch(2, completed=True)
    code, out, err = pgjobs("retry", "--state", "completed", answer="")  # a script: no answer
    assert (code, err) == (0, "")
    assert out.endswith("2 completed job(s) left alone: pass --include-completed to run them "
                        f"again ({RUNS_AGAIN})\n")  # fmt: skip
    assert set(Job.objects.values_list("state", flat=True)) == {S.COMPLETED}


def test_retry_by_filter_with_include_completed_says_they_run_again_before_it_asks():
    done = JobFactory.create_batch(2, queue="mail", completed=True)
    JobFactory(queue="mail", discarded=True)
    code, _, err = pgjobs("retry", "--queue", "mail", "--include-completed", answer="n\n")
    assert code == 1
    assert (
        "retry 3 job(s): jobs with queue mail? 2 of them completed and will run again: "
        f"{RUNS_AGAIN}"
    ) in err
    assert {Job.objects.get(pk=j.pk).state for j in done} == {S.COMPLETED}
    report = as_json("retry", "--queue", "mail", "--include-completed", "--yes")
    assert report == {
        "action": "retry", "matched": 3, "changed": 3, "completed_left_alone": 0,
        "key_held": 0, "key_held_ids": [],
    }  # fmt: skip
    assert set(Job.objects.values_list("state", flat=True)) == {S.AVAILABLE}


@pytest.mark.parametrize("verb", ["retry", "cancel"])
def test_a_job_deleted_while_it_is_changed_is_said_to_be_gone(verb):
    """Deleted between the command's read and its UPDATE: a retry said "is discarded:
    can't retry it", a cancel "is scheduled: can't cancel it"."""
    job = JobFactory(discarded=True) if verb == "retry" else JobFactory(scheduled=True)
    with deleted_before_its_update(job.pk):
        code, out, err = pgjobs(verb, str(job.pk))
    assert code == 1, err
    assert out == f"job {job.pk}: no longer exists (it was deleted or pruned): can't {verb} it\n"
    assert not Job.objects.exists()


def test_cancel_by_id_takes_the_lease_of_a_running_job_and_leaves_finished_ones():
    running = JobFactory(executing=True)
    done = JobFactory(completed=True)
    report = as_json("cancel", str(running.pk), str(done.pk))
    assert [(r["id"], r["ok"], r["state"]) for r in report["results"]] == [
        (running.pk, True, "cancelled"),
        (done.pk, True, "completed"),
    ]
    running.refresh_from_db()
    assert running.lease is None


def test_a_cancel_of_a_job_that_completed_meanwhile_says_so():
    job = JobFactory(scheduled=True)
    with completed_before_its_update(job.pk):
        code, out, err = pgjobs("cancel", str(job.pk))
    assert code == 0, err
    assert out == f"job {job.pk}: had already finished (completed)\n"


def test_retry_by_filter_asks_first_and_changes_nothing_without_a_yes():
    jobs = [JobFactory(queue="mail", discarded=True) for _ in range(3)]
    JobFactory(queue="default", discarded=True)
    code, _, err = pgjobs("retry", "--state", "discarded", "--queue", "mail", answer="n\n")
    assert code == 1 and "retry 3 job(s): jobs with state discarded, queue mail?" in err
    assert Job.objects.filter(state=S.DISCARDED).count() == 4
    code, _, _ = pgjobs("retry", "--state", "discarded", "--queue", "mail", answer="")  # EOF
    assert code == 1 and Job.objects.filter(state=S.DISCARDED).count() == 4

    code, out, _ = pgjobs("retry", "--state", "discarded", "--queue", "mail", answer="y\n")
    assert code == 0 and "3 job(s) will run again" in out
    assert {j.state for j in Job.objects.filter(pk__in=[j.pk for j in jobs])} == {S.AVAILABLE}


@pytest.mark.parametrize("verb", ["retry", "cancel", "delete"])
def test_the_count_before_a_change_by_filter_is_cut_short_not_the_change(monkeypatch, verb):
    # --task alone: no index serves it, and the question's count read every row without
    # limit (0.5 s at 600,000 jobs, two counts for a retry). Past its time limit the
    # question gives the planner's estimate; the change itself is never cut short.
    finished_jobs_analyzed(count=50_000)
    state = S.SCHEDULED if verb == "cancel" else S.DISCARDED
    cancelled = verb == "cancel"  # a job a cancel changes: not finished
    gone = JobFactory(task="shop.tasks.gone", scheduled=cancelled, discarded=not cancelled)
    monkeypatch.setattr(pgjobs_command, "COUNT_SECONDS", 0.001)
    code, _, err = pgjobs(verb, "--task", "shop.tasks.gone", answer="n\n")
    assert code == 1, err
    assert re.match(rf"{verb} ≈\d+ job\(s\): jobs with task shop.tasks.gone\? ", err), err
    assert (
        "(the planner's estimate: counting them took more than 0.001 s; the change itself "
        "is not cut short)"
    ) in err
    assert err.endswith("nothing done (answer y, or pass --yes)")
    assert Job.objects.filter(task="shop.tasks.gone").get().state == state
    report = as_json(verb, "--task", "shop.tasks.gone", "--yes")
    assert report["changed"] == 1
    after = Job.objects.filter(pk=gone.pk).values_list("state", flat=True).first()
    assert after == {"retry": S.AVAILABLE, "cancel": S.CANCELLED, "delete": None}[verb]


@pytest.mark.django_db(transaction=True)
def test_the_count_before_a_change_cancelled_by_an_operator_changes_nothing(second_connection):
    JobFactory(task="shop.tasks.gone", discarded=True)
    with second_connection.transaction():
        second_connection.execute(f"LOCK TABLE {Job._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        with cancelled_once_running("shop.tasks.gone"):
            code, out, err = pgjobs("retry", "--task", "shop.tasks.gone", "--yes")
    assert (code, out) == (1, "")
    assert re.fullmatch(
        r"nothing done: the database cancelled counting the jobs after \d+\.\d s \(an "
        r"operator's pg_cancel_backend\?\); run it again",
        err,
    ), err
    assert Job.objects.get().state == S.DISCARDED


@pytest.mark.parametrize("verb", ["retry", "cancel", "delete"])
def test_a_filter_that_matches_no_job_is_done_without_a_question(verb):
    # It asked "retry 0 job(s): ...? [y/N]" and, with no answer (a script, cron), exited 1
    # "nothing done", though the exit codes say a filter that matched no job is done.
    kept = JobFactory(queue="mail", discarded=True)
    code, out, err = pgjobs(verb, "--state", "discarded", "--queue", "default", answer="")
    assert (code, err) == (0, "")
    assert f"no jobs with state discarded, queue default: nothing to {verb}" in out
    assert as_json(verb, "--state", "discarded", "--queue", "default") == {
        "action": verb,
        "matched": 0,
        "changed": 0,
        **({"completed_left_alone": 0} if verb == "retry" else {}),
    }
    assert Job.objects.get().pk == kept.pk and Job.objects.get().state == S.DISCARDED


def test_delete_of_an_unknown_id_is_an_error_as_for_retry_and_cancel():
    # It asked "delete 0 job(s): jobs with id 4211?" and then, answered or with --yes,
    # exited 0 "0 job(s) deleted"; retry, cancel and show of an unknown id exit 1.
    done = JobFactory(completed=True)
    missing = done.pk + 1000
    code, _, err = pgjobs("delete", str(missing), "--yes")
    assert code == 1 and f"no job with id {missing}; nothing done" in err
    code, out, err = pgjobs("delete", str(done.pk), str(missing), answer="y\n")
    assert code == 1 and "1 job(s) deleted" in out and f"no job with id {missing}" in err
    assert not Job.objects.exists()


def test_delete_asks_even_by_id_keeps_executing_jobs_and_takes_yes_for_scripts():
    done = JobFactory(completed=True)
    running = JobFactory(executing=True)
    code, _, err = pgjobs("delete", str(done.pk), str(running.pk), answer="no\n")
    assert code == 1 and "delete 2 job(s)" in err
    assert Job.objects.count() == 2
    report = as_json("delete", str(done.pk), str(running.pk), "--yes")
    assert report == {"action": "delete", "matched": 2, "changed": 1}
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]


def test_cancel_by_filter_in_one_update():
    for _ in range(3):
        JobFactory(queue="mail", scheduled=True)
    report = as_json("cancel", "--queue", "mail", "--yes")
    assert report["changed"] == 3
    assert set(Job.objects.values_list("state", flat=True)) == {S.CANCELLED}


@pytest.mark.parametrize(
    "args, why",
    [
        # Neither said "..., not both" too, as if both had been given.
        (["retry"], "retry: give job ids or filters (--state, --queue, --task, --since, "
         "--before): none was given"),
        (["delete", "--yes"], "delete: give job ids or filters"),
        (["retry", "1", "--state", "discarded"], "retry: give job ids or filters (--state, "
         "--queue, --task, --since, --before), not both"),
    ],
)  # fmt: skip
def test_a_change_needs_ids_or_filters_but_not_both(args, why):
    JobFactory(discarded=True)
    code, _, err = pgjobs(*args)
    assert code == 1 and why in err
    assert "not both" not in err or "1" in args
    assert Job.objects.get().state == S.DISCARDED


def test_pause_and_resume_queues_and_refuse_unknown_ones_changing_nothing():
    QueueFactory(name="reports")
    code, out, _ = pgjobs("pause", "mail", "reports")
    assert code == 0 and "mail: paused" in out and "reports: paused" in out
    assert set(Queue.objects.filter(paused=True).values_list("name", flat=True)) == {
        "mail",
        "reports",
    }
    code, out, _ = pgjobs("pause", "mail")
    assert "mail: already paused" in out
    code, _, err = pgjobs("resume", "mail", "nope")
    assert code == 1 and "no queue named nope" in err
    assert Queue.objects.get(name="mail").paused
    assert as_json("resume", "mail")["results"] == [{"queue": "mail", "changed": True}]
    assert not Queue.objects.get(name="mail").paused


@pytest.mark.parametrize("names", [[""], [",", " "], [" , "]])
@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_pause_and_resume_of_no_queue_name_is_refused(verb, names):
    """Each was exit status 0, saying nothing and changing nothing."""
    code, out, err = pgjobs(verb, *names)
    assert code == 1 and out == ""
    assert f"{verb}: give at least one queue name" in err
    assert not Queue.objects.filter(paused=True).exists()


def test_schedules_show_next_fires_lateness_and_rows_that_no_longer_parse():
    now = timezone.now()
    late = ScheduleFactory(name="late", cron="*/5 * * * *")
    due = now - timedelta(minutes=10)
    Schedule.objects.filter(pk=late.pk).update(next_fire_at=due)
    broken = ScheduleFactory(name="broken")
    Schedule.objects.filter(pk=broken.pk).update(cron="every tuesday")
    listed = {s["name"]: s for s in as_json("schedules", "--next", "2")["schedules"]}
    assert 590 < listed["late"]["late_seconds"] < 700
    assert len(listed["late"]["upcoming"]) == 2
    assert listed["broken"]["upcoming"] == [] and "can't be planned" in listed["broken"]["problem"]
    code, out, _ = pgjobs("schedules")
    assert code == 0 and "late" in out and "broken: can't be planned" in out
    # The table's times name their zone (TIME_ZONE), as each "next" line names its own.
    zone = timezone.localtime(now).strftime("%Z")
    assert timezone.localtime(due).strftime(f"%Y-%m-%d %H:%M:%S {zone}") in out


def test_prune_deletes_jobs_finished_before_the_limit():
    old = JobFactory(completed=True)
    Job.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=2))
    kept = JobFactory(completed=True)
    assert as_json("prune", "--older-than", "1d")["jobs"] == 1
    assert list(Job.objects.values_list("pk", flat=True)) == [kept.pk]


def test_prune_refuses_an_age_before_year_one():
    """A traceback (OverflowError) it was."""
    kept = JobFactory(completed=True)
    code, out, err = pgjobs("prune", "--older-than", "99999999w")
    assert (code, out) == (1, "")
    assert "older_than reaches before year 1" in err
    assert list(Job.objects.values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.parametrize(
    ("option", "field"), [("--stale-after", "stale_after"), ("--max-scheduler-lag", "max_lag")]
)
def test_health_refuses_a_limit_before_year_one(option, field):
    """A traceback (OverflowError) it was, once a worker or a schedule was there."""
    WorkerProcessFactory()
    ScheduleFactory()
    code, out, err = pgjobs("health", option, "99999999w")
    assert (code, out) == (1, "")
    assert f"{field} reaches before year 1" in err


def test_prune_cancels_stranded_jobs_as_the_schedulers_routine_does():
    """It only deleted finished jobs and ticks: a waiting job nothing can release
    waited for ever, however often an operator pruned."""
    stranded = insert_job(state="'waiting'", pending_dependencies="1")  # and no edge
    assert Job.objects.get(pk=stranded).state == S.WAITING
    code, out, err = pgjobs("prune", "--older-than", "1d")
    assert code == 0, err
    assert "cancelled 1 stranded job(s)" in out
    assert "older than 1d," in out  # as it was given: it said "older than 1d 0h"
    assert Job.objects.get(pk=stranded).state == S.CANCELLED
    report = as_json("prune", "--older-than", "1d")
    assert (report["stranded"], report["jobs"], report["rate_windows"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("given", "said"),
    [("1w", "1w"), ("14d", "14d"), ("36h", "36h"), ("100000", "100000s"), ("1.5 d", "1.5d")],
)
def test_prune_says_the_age_as_it_was_given(given, said):
    # It said logs.delay's reading: "1w" as "7d", 100000 seconds as "1d 3h".
    code, out, err = pgjobs("prune", "--older-than", given)
    assert code == 0, err
    assert f" older than {said}, " in out


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(7 * 86400, "1w"), (5400, "90m"), (100_000, "100000s"), (0.25, "0.25s")],
)
def test_prune_says_the_default_age_in_a_form_it_reads_back(settings, seconds, said):
    from django_pgjobs.selection import parse_duration

    settings.PGJOBS = {**settings.PGJOBS, "PRUNE_AFTER": seconds}
    code, out, err = pgjobs("prune")
    assert code == 0, err
    assert f" older than {said}, " in out
    assert parse_duration(said) == timedelta(seconds=seconds)


# -- health ----------------------------------------------------------------------------------


def test_health_passes_with_nothing_running_and_fails_on_a_stale_worker_of_this_host():
    assert as_json("health")["healthy"] is True
    long_ago = timezone.now() - timedelta(minutes=5)
    stale = WorkerProcessFactory(
        host=socket.gethostname(), started_at=long_ago, heartbeat_at=long_ago
    )
    code, out, _ = pgjobs("health")
    assert code == 1 and f"FAIL  workers    worker {stale.pk}" in out
    # Another host's stale worker is that host's business.
    assert as_json("health", "--host", "elsewhere")["healthy"] is True
    # Restarted since (a new process on this host): the old row waits for rescue.
    WorkerProcessFactory(host=socket.gethostname())
    assert as_json("health")["healthy"] is True


def test_health_says_plainly_that_no_worker_is_alive_when_none_is_required():
    """Healthy (the exit status is kept: a host may run no worker), but "0 alive on
    web-1" read as one more fine line beside "ok": it says so in words."""
    host = socket.gethostname()
    code, out, _ = pgjobs("health")
    assert code == 0
    said = f"no worker is alive on {host} (not required: with --require-worker this fails)"
    assert said in out
    assert as_json("health")["checks"][1] == {"name": "workers", "ok": True, "detail": said}
    WorkerProcessFactory(host="elsewhere")  # another host's worker is not this one's
    assert said in pgjobs("health")[1]
    WorkerProcessFactory(host=host)
    code, out, _ = pgjobs("health")
    assert code == 0 and f"1 alive on {host}" in out and "no worker" not in out


@pytest.mark.parametrize(
    ("host", "said"),
    [("\udcff", "lone surrogate"), ("a\tb", "unprintable"), ("", "1 to 255 characters"),
     (" ", "white space")],
    ids=["a byte no UTF-8 holds (from a shell: $'\\xff')", "a tab", "empty", "a space"],
)  # fmt: skip
def test_health_refuses_a_host_no_worker_records(host, said):
    """A shell's argument of a byte no UTF-8 holds (Python reads it as a lone
    surrogate) was a traceback (UnicodeEncodeError in psycopg); "" checked this
    host instead; a tab was "no worker is alive on a\tb". Refused, as stopworker's."""
    code, out, err = pgjobs("health", "--host", host)
    assert code == 1 and not out
    assert err.startswith("--host ") and said in err and "no worker process records" in err
    with pytest.raises(InvalidOption, match=said):
        health.run_checks(host=host)


def test_health_can_require_a_worker_on_this_host():
    code, out, _ = pgjobs("health", "--require-worker")
    assert code == 1 and "no worker is running on" in out


def test_health_fails_when_an_unpaused_queue_has_waited_too_long():
    JobFactory(queue="mail", run_at=timezone.now() - timedelta(minutes=10))
    code, out, _ = pgjobs("health", "--max-age", "5m")
    assert code == 1 and "FAIL  queue mail" in out
    assert as_json("health", "--max-age", "5m", "--queues", "default")["healthy"] is True
    Queue.objects.filter(name="mail").update(paused=True)
    assert as_json("health", "--max-age", "5m")["healthy"] is True


def test_health_says_a_queue_with_no_due_job_has_none_not_one_waiting_0s():
    # A newcomer's empty queue read "oldest due job waiting 0s": which job?
    JobFactory(queue="mail", run_at=timezone.now() - timedelta(seconds=30))
    code, out, _ = pgjobs("health", "--max-age", "5m")
    assert code == 0, out
    assert re.search(r"ok +queue default +no due job \(limit 300s\)", out), out
    assert re.search(r"ok +queue mail +oldest due job waiting \d+s \(limit 300s\)", out), out


def test_health_fails_when_a_cron_tick_is_late_or_no_scheduler_ever_planned():
    late = ScheduleFactory()
    Schedule.objects.filter(pk=late.pk).update(next_fire_at=timezone.now() - timedelta(minutes=3))
    code, out, _ = pgjobs("health")
    assert code == 1 and f"schedule '{late.name}' is" in out
    assert as_json("health", "--max-scheduler-lag", "5m")["healthy"] is True
    assert as_json("health", "--max-scheduler-lag", "off")["healthy"] is True
    Schedule.objects.filter(pk=late.pk).update(
        next_fire_at=None, updated_at=timezone.now() - timedelta(hours=1)
    )
    code, out, _ = pgjobs("health")
    assert code == 1 and "has not been planned by any scheduler" in out


def test_health_says_why_a_schedule_is_late_from_what_the_database_knows():
    """ "schedule 'x' is 180s late" said nothing of why: no scheduler running, one
    that stopped passing, a cron written by SQL that no scheduler can plan, or a
    scheduler that runs and still hasn't fired it."""
    late = ScheduleFactory()
    Schedule.objects.filter(pk=late.pk).update(next_fire_at=timezone.now() - timedelta(minutes=3))

    def detail() -> str:
        code, out, _ = pgjobs("health", "--json")
        (check,) = [c for c in json.loads(out)["checks"] if c["name"] == "scheduler"]
        assert code == 1 and check["ok"] is False
        return check["detail"]

    assert detail().endswith(
        "(limit 60s): no scheduler is running (no runscheduler has a row in Scheduler processes)"
    )
    process = SchedulerProcess.objects.create(host="web-1", pid=4242)
    gone = timezone.now() - timedelta(minutes=5)
    SchedulerProcess.objects.filter(pk=process.pk).update(started_at=gone, heartbeat_at=gone)
    assert re.search(
        r": no scheduler has passed in 120s: the last, on 'web-1' \(pid 4242\), 30\ds ago$",
        detail(),
    )
    SchedulerProcess.objects.filter(pk=process.pk).update(heartbeat_at=timezone.now())
    assert re.search(
        r": a scheduler runs \(on 'web-1', pid 4242, passed \ds ago\) but has not fired it; "
        r"see its log$",
        detail(),
    )
    Schedule.objects.filter(pk=late.pk).update(cron="61 * * * *")  # clears next_fire_at
    Schedule.objects.filter(pk=late.pk).update(next_fire_at=timezone.now() - timedelta(hours=1))
    assert re.search(r": no scheduler can plan it: .*61", detail())


@pytest.mark.slow
def test_health_of_a_real_worker_process(worker_process):
    worker = worker_process("--concurrency", "1")
    wait_until(lambda: WorkerProcess.objects.filter(pid=worker.pid).exists(), timeout=30)
    result = run_cli("health", "--require-worker", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["healthy"] is True

    worker.proc.send_signal(signal.SIGSTOP)  # frozen: alive, but no heartbeat
    try:
        result = wait_until(
            lambda: (r := run_cli("health", "--stale-after", "2s")).returncode == 1 and r,
            timeout=30,
        )
        assert "last heartbeat" in result.stdout
    finally:
        worker.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: run_cli("health", "--stale-after", "2s").returncode == 0, 30)


# -- odd input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "99999999999999999999"], "not a job id"),
        (["show", "-3"], "not a job id"),
        (["show", "12abc"], "not a job id"),
        (["show", "٣"], "not a job id"),  # a digit, but not an ASCII one
        (["retry", "0", "--yes"], "not a job id"),
        (["list", "--since", "yesterday"], "--since: expected an ISO date"),
        (["list", "--since", "2025-13-45"], "--since: expected an ISO date"),
        (["list", "--before", "999999999999999999w"], "too long"),
        (["list", "--state", "done"], "unknown state 'done'"),
        (["list", "--queue", "no spaces"], "invalid queue name"),
        (["list", "--task", "x" * 300], "not a task name"),
        (["list", "--limit", "0"], "--limit must be"),
        (["schedules", "--next", "1000"], "--next must be"),
        (["prune", "--older-than", "soon"], "--older-than: expected"),
        (["health", "--max-age", "0"], "--max-age must be more than 0"),
        (["pause", "bad/name"], "invalid queue name"),
    ],
)
def test_odd_input_is_a_clear_error_with_exit_code_1(args, message):
    code, _, err = pgjobs(*args)
    assert code == 1
    assert message in err


def test_an_empty_filter_is_refused_rather_than_selecting_every_job():
    """`--queue "$QUEUE"` with QUEUE unset must not widen a bulk action to every queue."""
    JobFactory(discarded=True, queue="mail")
    for option in ("--task", "--queue", "--state"):
        for value in ("", " ", ",", " , "):
            code, _, err = pgjobs("retry", "--state", "discarded", option, value, "--yes")
            assert code == 1 and f"{option}: no name in" in err, (option, value)
    assert Job.objects.get().state == "discarded"


def test_a_nul_in_any_filter_is_refused_before_the_database_sees_it():
    for option in ("--task", "--queue", "--state"):
        code, _, err = pgjobs("list", option, "a\x00b")
        assert code == 1 and "\\x00" in err


@pytest.mark.slow
def test_the_real_command_exits_1_without_a_traceback_and_2_on_usage_errors():
    bad = run_cli("show", "99999999999999999999")
    assert bad.returncode == 1
    assert "not a job id" in bad.stderr and "Traceback" not in bad.stderr
    usage = run_cli("frobnicate")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    missing = run_cli("show", "12345")
    assert missing.returncode == 1 and "no job with id 12345" in missing.stderr


@pytest.mark.slow
def test_a_reader_that_stops_reading_ends_the_command_without_a_traceback():
    # `pgjobs show 42 | head` printed a BrokenPipeError traceback once head had its lines.
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "pgjobs", "stats"],
        cwd=ROOT,
        env={**os.environ, **database_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # before it has written a line
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()  # a no-op once it has exited
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 1


@pytest.mark.parametrize("offset", ["+20:00", "-23:59", "+15:59:59.5", "+05:00:00.000001"])
def test_an_instant_in_an_offset_postgresql_does_not_take_selects_by_its_instant(offset):
    """Python reads UTC offsets up to 23:59, with fractions of a second; PostgreSQL takes
    only up to 15:59 and none: sent as given, the filter was "database error: time
    zone displacement out of range"."""
    job = JobFactory()
    created = job.created_at.astimezone(datetime.fromisoformat(f"2025-01-01T00:00{offset}").tzinfo)
    since = (created - timedelta(seconds=1)).isoformat()
    code, out, err = pgjobs("list", "--since", since, "--json")
    assert code == 0, err
    assert [row["id"] for row in json.loads(out)["jobs"]] == [job.pk]
    code, _, err = pgjobs("cancel", "--before", since, "--yes")
    assert code == 0, err
    assert Job.objects.get(pk=job.pk).state == S.AVAILABLE


@pytest.mark.parametrize(
    "instant", ["0001-01-01T00:00:00+14:00", "0001-01-01", "9999-12-31T12:00:00-12:00"]
)
def test_an_instant_no_row_holds_is_refused_naming_the_range(instant):
    with pytest.raises(InvalidSelection, match="out of range: times must lie from 0001-01-02"):
        parse_instant(instant, what="--since")
    code, _, err = pgjobs("list", "--since", instant)
    assert code != 0 and "--since" in err and "database error" not in err, err


def test_job_filters_parse_instants_on_the_projects_clock():
    now = timezone.now()
    assert parse_instant("2h", now) == now - timedelta(hours=2)
    assert parse_instant("2025-05-01T12:00+02:00").isoformat() == "2025-05-01T12:00:00+02:00"
    assert timezone.is_aware(parse_instant("2025-05-01"))
    with pytest.raises(InvalidSelection):
        JobFilter.parse(ids=["1", "x"])


def test_retry_by_filter_retries_every_job_it_can_and_names_those_whose_key_is_held():
    """Two selected jobs of one unique_key failed the whole retry on the unique index."""
    older, newer = (JobFactory(queue="reports", unique_key="k", discarded=True) for _ in "ab")
    held = JobFactory(queue="reports", unique_key="h", discarded=True)
    JobFactory(queue="reports", unique_key="h")
    free = JobFactory(queue="reports", discarded=True)
    code, out, err = pgjobs("retry", "--state", "discarded", "--queue", "reports", "--yes")
    assert (code, err) == (0, "")
    assert out == (
        "2 job(s) will run again\n"
        "2 job(s) left as they were: their unique_key is held by an active job (the newest "
        f"job of a key is the one retried): ids {older.pk}, {held.pk}\n"
    )
    assert [Job.objects.get(pk=j.pk).state for j in (older, newer, held, free)] == [
        S.DISCARDED, S.AVAILABLE, S.DISCARDED, S.AVAILABLE,
    ]  # fmt: skip
    JobFactory(queue="reports", unique_key="x", discarded=True)
    assert as_json("retry", "--state", "discarded", "--queue", "reports", "--yes") == {
        "action": "retry", "matched": 3, "changed": 1, "completed_left_alone": 0,
        "key_held": 2, "key_held_ids": [older.pk, held.pk],
    }  # fmt: skip


def test_retry_by_id_of_a_job_whose_key_is_held_names_the_holder():
    job = JobFactory(queue="reports", unique_key="k", discarded=True)
    holder = JobFactory(queue="reports", unique_key="k")
    code, out, _ = pgjobs("retry", str(job.pk))
    assert code == 1
    assert (
        f"job {job.pk}: can't retry it: its unique_key 'k' of queue 'reports' is held by "
        f"active job {holder.pk}"
    ) in out


def test_djangos_own_options_are_taken_after_the_subcommand_too(db):
    """`pgjobs health --settings mysite.prod`, as a probe is written: every other
    command takes Django's options anywhere, and this one refused them after its
    subcommand (`unrecognized arguments: --settings`, exit 2: a probe that always fails)."""
    done = run_cli(
        "stats",
        "--json",
        "--settings",
        "testproject.settings",
        "--pythonpath",
        str(ROOT),
        "--traceback",
        "--no-color",
        "-v",
        "0",
        "--skip-checks",
    )
    assert done.returncode == 0, done.stderr
    assert "queues" in json.loads(done.stdout)
    # And they still work before it.
    done = run_cli("--settings", "testproject.settings", "-v", "0", "stats", "--json")
    assert done.returncode == 0, done.stderr
    # Given after it, the settings are the ones named.
    done = run_cli("health", "--settings", "no_such_settings_module")
    assert done.returncode == 1 and "No module named 'no_such_settings_module'" in done.stderr
