"""The job admin: list, detail with tracebacks, and operator actions behind permissions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psycopg
import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_pgjobs import stats
from django_pgjobs.models import Job, SchedulerProcess
from django_pgjobs.states import JobState
from tests.admin_helpers import action, changelist, detail, messages_of, staff_client, state_of
from tests.conftest import on_another_connection
from tests.factories import ConnectorFactory, JobFactory, WorkerProcessFactory
from tests.gone import completed_before_its_update, deleted_before_its_update

pytestmark = pytest.mark.django_db
S = JobState


# -- the list ---------------------------------------------------------------------------


def test_the_list_shows_jobs_and_a_count_per_state(admin_client):
    JobFactory.create_batch(2, discarded=True)
    JobFactory(completed=True, task="testproject.demo.tasks.record")
    response = admin_client.get(changelist())
    assert response.status_code == 200
    tabs = {tab["state"]: str(tab["tally"]) for tab in response.context["state_tabs"]}
    assert tabs["discarded"] == "2" and tabs["completed"] == "1" and tabs["executing"] == "0"
    assert b"testproject.demo.tasks.record" in response.content


def test_state_counts_follow_the_other_filters(admin_client):
    JobFactory(discarded=True, queue="mail")
    JobFactory(discarded=True, queue="default")
    response = admin_client.get(changelist(), {"queue": "mail"})
    tabs = {tab["state"]: tab["tally"].value for tab in response.context["state_tabs"]}
    assert tabs["discarded"] == 1


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"state": "discarded"}, {"failed"}),
        ({"queue": "mail"}, {"mail"}),
        ({"task": "testproject.demo.tasks.record"}, {"record"}),
        ({"q": "needle"}, {"needle"}),
        ({"q": "RECORD"}, {"record"}),
    ],
)
def test_filters_and_search(admin_client, query, expected):
    JobFactory(discarded=True, args=["failed"])
    JobFactory(queue="mail", args=["mail"])
    JobFactory(task="testproject.demo.tasks.record", args=["record"])
    JobFactory(kwargs={"tag": "needle"}, args=["needle"])
    response = admin_client.get(changelist(), query)
    assert response.status_code == 200
    shown = {job.args[0] for job in response.context["cl"].result_list}
    assert shown == expected


CONNECTOR_CALL = "django_pgjobs.connectors.tasks.call"


def task_choices(response) -> dict[str, str]:
    """The "By task" filter's choices: their ``?task=`` value to their label."""
    (spec,) = [s for s in response.context["cl"].filter_specs if s.parameter_name == "task"]
    return dict(spec.lookup_choices)


def test_by_task_shows_the_connectors_task_as_connector_calls_once_a_connector_exists(
    admin_client,
):
    # It listed "django_pgjobs.connectors.tasks.call" among the project's own tasks,
    # in every project, connectors or not.
    choices = task_choices(admin_client.get(changelist()))
    assert CONNECTOR_CALL not in choices and "testproject.demo.tasks.add" in choices
    ConnectorFactory(name="billing-webhook")
    JobFactory(task=CONNECTOR_CALL, connector="billing-webhook", args=["called"])
    JobFactory(args=["other"])
    choices = task_choices(admin_client.get(changelist()))
    assert list(choices)[-1] == CONNECTOR_CALL and choices[CONNECTOR_CALL] == "connector calls"
    assert list(choices)[:-1] == sorted(set(choices) - {CONNECTOR_CALL})
    response = admin_client.get(changelist(), {"task": CONNECTOR_CALL})
    assert {job.args[0] for job in response.context["cl"].result_list} == {"called"}
    assert task_choices(response)[CONNECTOR_CALL] == "connector calls"


def test_a_filter_on_connector_calls_stays_labelled_after_the_connectors_are_gone(admin_client):
    response = admin_client.get(changelist(), {"task": CONNECTOR_CALL})
    assert response.status_code == 200
    assert task_choices(response)[CONNECTOR_CALL] == "connector calls"


def test_search_by_id_finds_that_job(admin_client):
    wanted = JobFactory()
    JobFactory.create_batch(3)
    for term in (str(wanted.pk), f"#{wanted.pk}"):
        response = admin_client.get(changelist(), {"q": term})
        assert [job.pk for job in response.context["cl"].result_list] == [wanted.pk]


def test_an_unknown_state_is_a_clear_error_not_an_empty_list(admin_client):
    response = admin_client.get(changelist(), {"state": "exploded"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_the_date_hierarchy_offers_the_range_of_jobs_without_scanning_them(admin_client):
    JobFactory()
    response = admin_client.get(changelist())
    assert b"date-hierarchy" in response.content or b"toplinks" in response.content
    year = Job.objects.get().created_at.year
    response = admin_client.get(changelist(), {"created_at__year": year})
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 1


def test_past_the_cap_the_list_shows_an_estimate(admin_client, monkeypatch):
    monkeypatch.setattr(stats, "COUNT_CAP", 3)
    JobFactory.create_batch(5, completed=True)
    response = admin_client.get(changelist())
    assert response.context["cl"].paginator.is_estimate
    assert b"about " in response.content
    completed = next(t for t in response.context["state_tabs"] if t["state"] == "completed")
    assert not completed["tally"].exact and str(completed["tally"]).startswith("≈")


def test_the_list_costs_a_bounded_number_of_queries(admin_client, django_assert_max_num_queries):
    JobFactory.create_batch(30)
    with django_assert_max_num_queries(25):
        assert admin_client.get(changelist()).status_code == 200


def test_the_list_shows_each_jobs_last_error_and_how_long_it_ran(admin_client):
    started = timezone.now() - timedelta(minutes=5)
    failed = JobFactory(
        discarded=True,
        attempted_at=started,
        finished_at=started + timedelta(seconds=2.5),
        errors=[
            {"attempt": 1, "at": "", "error": "ValueError: first", "traceback": "..."},
            {"attempt": 2, "at": "", "error": "KeyError: 'gone'\nand more", "traceback": "..."},
        ],
    )
    quick = JobFactory(
        completed=True, attempted_at=started, finished_at=started + timedelta(milliseconds=250)
    )
    rows = _rows_by_id(admin_client.get(changelist()))
    assert "KeyError: &#x27;gone&#x27;" in rows[failed.pk] and "and more" not in rows[failed.pk]
    assert "ValueError" not in rows[failed.pk]
    assert ">2.5s<" in rows[failed.pk] and ">250ms<" in rows[quick.pk]


def test_a_completed_job_s_earlier_error_is_shown_as_earlier_not_as_a_failure(admin_client):
    # A job that failed once and then succeeded read, in red, like a failed one.
    earlier = [{"attempt": 1, "at": "", "error": "TimeoutError: slow", "traceback": "..."}]
    done = JobFactory(completed=True, errors=earlier)
    failed = JobFactory(discarded=True, errors=earlier)
    rows = _rows_by_id(admin_client.get(changelist()))
    assert "pgjobs-error" not in rows[done.pk]
    assert "earlier attempt: TimeoutError: slow" in rows[done.pk]
    assert 'class="pgjobs-error"' in rows[failed.pk] and "earlier" not in rows[failed.pk]


def test_the_list_reads_no_traceback_and_no_query_per_job(admin_client):
    """The list reads each job's last error out of ``errors`` in the database, not
    the column itself (every traceback), and costs the same for 2 jobs or 40."""
    tracebacks = [{"attempt": 1, "at": "", "error": "E: x", "traceback": "frame\n" * 500}]

    def queries_for(count: int) -> list[str]:
        JobFactory.create_batch(count, discarded=True, errors=tracebacks)
        stats.forget_over_cap()  # both loads cold: the table's statistics read by each
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(changelist()).status_code == 200
        return [query["sql"] for query in captured.captured_queries]

    few, many = queries_for(2), queries_for(38)
    assert len(few) == len(many)
    page = next(sql for sql in many if '"last_error"' in sql)
    assert not re.search(r'"pgjobs_job"\."errors"(?!\s*#>>)', page), page
    assert '"pgjobs_job"."result"' not in page


def test_times_are_shown_to_the_second_in_one_format(admin_client):
    at = datetime(2026, 3, 1, 9, 30, 15, 500_000, tzinfo=UTC)
    job = JobFactory(
        discarded=True,
        created_at=at,
        run_at=at + timedelta(seconds=30),
        attempted_at=at + timedelta(seconds=31),
        finished_at=at + timedelta(seconds=33),
        errors=[{"attempt": 1, "at": (at + timedelta(seconds=32)).isoformat(), "error": "E: x",
                 "traceback": ""}],
    )  # fmt: skip
    listing = admin_client.get(changelist()).content.decode()
    page = admin_client.get(detail(job)).content.decode()
    assert "2026-03-01 09:30:48</time>" in listing  # when it was discarded
    for shown in ("09:30:15", "09:30:45", "09:30:46", "09:30:47", "09:30:48"):
        assert f"2026-03-01 {shown}</time>" in page, shown
    assert ">2.0s<" in page  # the last attempt's duration
    for other in ("a.m.", "p.m.", "March 1, 2026"):  # Django's default format
        assert other not in listing + page, other
    dashboard = admin_client.get(reverse("admin:pgjobs_dashboard")).content.decode()
    assert re.search(r'id="pgjobs-updated">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d<', dashboard)
    WorkerProcessFactory(started_at=at)
    workers = admin_client.get(changelist("workerprocess")).content.decode()
    assert "2026-03-01 09:30:15</time>" in workers


def test_read_only_pages_are_titled_for_what_they_show(admin_client):
    """Jobs and worker rows change only through actions: no "Select job to change"."""
    worker = WorkerProcessFactory()
    scheduler = SchedulerProcess.objects.create(host="web-1", pid=42)
    pages = {
        "jobs": admin_client.get(changelist()),
        "workers": admin_client.get(changelist("workerprocess")),
        "worker": admin_client.get(reverse("admin:pgjobs_workerprocess_change", args=[worker.pk])),
        "schedulers": admin_client.get(changelist("schedulerprocess")),
        "scheduler": admin_client.get(
            reverse("admin:pgjobs_schedulerprocess_change", args=[scheduler.pk])
        ),
        "jobs, view only": staff_client("view_job").get(changelist()),
    }
    titles = {name: _title(response) for name, response in pages.items()}
    assert titles == {
        "jobs": "Jobs",
        "workers": "Worker processes",
        "worker": "Worker process",
        "schedulers": "Scheduler processes",
        "scheduler": "Scheduler process",
        "jobs, view only": "Jobs",
    }


def _title(response) -> str:
    html = response.content.decode()
    assert "to change" not in html and "to view" not in html
    return re.search(r"<h1>(.*?)</h1>", html).group(1)


def _rows_by_id(response) -> dict[int, str]:
    """Each row of the job list, by job id."""
    html = response.content.decode()
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
    found = {}
    for row in rows:
        match = re.search(r'name="_selected_action" value="(\d+)"', row)
        if match:
            found[int(match.group(1))] = row
    return found


# -- the detail page ----------------------------------------------------------------------


def test_the_detail_page_shows_args_result_and_every_attempt_with_its_traceback(admin_client):
    job = JobFactory(
        discarded=True,
        args=[42, "x"],
        kwargs={"mode": "fast"},
        errors=[
            {"attempt": 1, "at": "2026-01-01T00:00:00+00:00", "error": "ValueError: one",
             "traceback": "Traceback (most recent call last):\n  first frame\nValueError: one"},
            {"attempt": 2, "at": "2026-01-01T00:01:00+00:00", "error": "KeyError: 'two'",
             "traceback": "Traceback (most recent call last):\n  second frame\nKeyError: 'two'"},
        ],
    )  # fmt: skip
    response = admin_client.get(detail(job))
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("42", "&quot;fast&quot;", "ValueError: one", "first frame", "second frame",
                 "Attempt 2 failed", "Discarded after", "Retry now"):  # fmt: skip
        assert text in page, text
    assert "KeyError: &#x27;two&#x27;" in page, "errors are escaped, never rendered as HTML"


def test_the_detail_page_of_a_completed_job_shows_its_result(admin_client):
    job = JobFactory(completed=True, result={"sent": 3})
    page = admin_client.get(detail(job)).content.decode()
    assert "&quot;sent&quot;: 3" in page and "Attempt 1 completed" in page


def test_the_detail_page_offers_only_what_the_state_and_permissions_allow(admin_client):
    running = JobFactory(executing=True)
    page = admin_client.get(detail(running)).content.decode()
    assert "Cancel" in page and "Retry now" not in page and "Delete</a>" not in page
    viewer = staff_client("view_job")
    page = viewer.get(detail(JobFactory(discarded=True))).content.decode()
    assert "Retry now" not in page and "pgjobs-cancel" not in page


def test_the_detail_page_is_read_only(admin_client):
    job = JobFactory()
    assert admin_client.post(detail(job), {"state": "completed"}).status_code == 405
    assert state_of(job) == S.AVAILABLE


def test_there_is_no_add_form_jobs_are_enqueued_by_code(admin_client):
    assert admin_client.get(reverse("admin:pgjobs_job_add")).status_code == 403


# -- actions on one job -----------------------------------------------------------------------


def test_retry_makes_a_discarded_job_available_again(admin_client):
    job = JobFactory(discarded=True)
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == S.AVAILABLE and job.max_attempts > job.attempt


def test_a_completed_job_offers_to_run_again_not_to_retry(admin_client):
    """A completed job failed nothing: "Retry now", in the primary button's colour,
    read as if it needed one, and ran it again (a second welcome mail) at one click."""
    page = admin_client.get(detail(JobFactory(completed=True))).content.decode()
    assert "Run again…" in page and "Retry now" not in page
    assert 'class="button default"' not in page
    page = admin_client.get(detail(JobFactory(scheduled=True))).content.decode()
    assert "Run now" in page and "Retry now" not in page


@pytest.mark.parametrize(
    "attempt, label, said",
    [(0, "Run now", "will run now"), (1, "Run again", "will run again")],
    ids=["cancelled before it ran", "cancelled after an attempt"],
)
def test_a_cancelled_job_offers_to_run_not_to_retry(admin_client, attempt, label, said):
    """A cancelled job failed nothing either: "Retry now" read as if it had. It runs
    (again, if it had started) at once: no question, so no "…"."""
    job = JobFactory(cancelled=True, attempt=attempt)
    page = admin_client.get(detail(job)).content.decode()
    assert f'id="pgjobs-retry">{label}</button>' in page and "Retry now" not in page
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]), follow=True)
    assert messages_of(response) == [f"Job #{job.pk} {said}."]
    assert state_of(job) == S.AVAILABLE


def test_running_a_completed_job_again_asks_first_and_changes_nothing(admin_client):
    job = JobFactory(completed=True)
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Run job #{job.pk} again?" in page and "testproject.demo.tasks.add" in page
    assert "happens again" in page and 'name="confirmed" value="yes"' in page
    assert detail(job) in page  # "No, take me back"
    assert state_of(job) == S.COMPLETED


def test_running_a_completed_job_again_once_confirmed_makes_it_available(admin_client):
    job = JobFactory(completed=True)
    url = reverse("admin:pgjobs_job_retry", args=[job.pk])
    response = admin_client.post(url, _answered_yes(admin_client.post(url)), follow=True)
    assert messages_of(response) == [f"Job #{job.pk} will run again."]
    assert state_of(job) == S.AVAILABLE


def test_a_yes_that_does_not_say_what_it_was_asked_about_asks_again(admin_client):
    """A bare "confirmed=yes" (a page of an earlier release, a hand-made POST) can't say
    which completion it saw: asked again, never run. Nor can one with a time that is
    no time, or none PostgreSQL takes."""
    job = JobFactory(completed=True)
    url = reverse("admin:pgjobs_job_retry", args=[job.pk])
    for completed_by in (None, "", "yesterday", "2026-01-01T00:00:00", "\x00",
                         "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):  # fmt: skip
        data = {"confirmed": "yes"} if completed_by is None else {
            "confirmed": "yes", "completed_by": completed_by}  # fmt: skip
        response = admin_client.post(url, data)
        assert response.status_code == 200 and b"again?" in response.content, completed_by
        response = admin_client.post(changelist(), {**action("retry_jobs", job), **data})
        assert response.status_code == 200 and b"again?" in response.content, completed_by
    assert state_of(job) == S.COMPLETED


def test_run_again_leaves_alone_a_job_completed_again_after_the_question(admin_client):
    """The page asked about the job's completion it showed; someone else ran it again
    meanwhile, and it completed again: a "yes" ran it a third time."""
    job = JobFactory(completed=True)
    url = reverse("admin:pgjobs_job_retry", args=[job.pk])
    yes = _answered_yes(admin_client.post(url))
    Job.objects.filter(pk=job.pk).update(finished_at=timezone.now() + timedelta(seconds=1))
    response = admin_client.post(url, yes, follow=True)
    assert messages_of(response) == [
        f"Job #{job.pk} completed after you were asked; left alone — choose "
        "“Run again…” to re-run it."
    ]
    assert state_of(job) == S.COMPLETED


def test_run_again_of_a_job_without_a_completion_time_is_timed_by_the_database(
    admin_client, monkeypatch
):
    """Its question carries the database's time, not a web host's 10 minutes ahead: a
    completion after it (stamped by the database) was re-run unasked."""
    from django_pgjobs.admin import jobs as jobs_admin

    real = timezone.now
    later = SimpleNamespace(now=lambda: real() + timedelta(minutes=10))
    monkeypatch.setattr(jobs_admin, "timezone", later)
    job = JobFactory(completed=True)
    Job.objects.filter(pk=job.pk).update(finished_at=None)  # written by SQL
    url = reverse("admin:pgjobs_job_retry", args=[job.pk])
    yes = _answered_yes(admin_client.post(url))
    Job.objects.filter(pk=job.pk).update(finished_at=Now() + timedelta(seconds=1))
    response = admin_client.post(url, yes, follow=True)
    assert "completed after you were asked" in messages_of(response)[0]
    assert state_of(job) == S.COMPLETED


def test_retry_now_of_a_job_that_completes_meanwhile_asks_first(admin_client):
    """The page offered "Retry now" for a failed job, which a worker ran and completed
    before the click's UPDATE: the retry ran it again, unasked."""
    job = JobFactory(retryable=True)
    with completed_before_its_update(job.pk):
        response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]))
    assert response.status_code == 200
    assert f"Run job #{job.pk} again?" in response.content.decode()
    assert state_of(job) == S.COMPLETED


def test_run_now_of_a_scheduled_job_needs_no_confirmation(admin_client):
    job = JobFactory(scheduled=True)
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]), follow=True)
    assert messages_of(response) == [f"Job #{job.pk} will run now."]
    assert state_of(job) == S.AVAILABLE


def test_retry_of_an_executing_job_says_why_and_changes_nothing(admin_client):
    job = JobFactory(executing=True)
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]), follow=True)
    assert "can&#x27;t be retried" in response.content.decode()
    assert state_of(job) == S.EXECUTING


def test_cancel_stops_a_scheduled_job(admin_client):
    job = JobFactory(scheduled=True)
    admin_client.post(reverse("admin:pgjobs_job_cancel", args=[job.pk]))
    assert state_of(job) == S.CANCELLED


def test_a_cancel_of_a_job_that_completed_meanwhile_says_so(admin_client):
    """The page showed it executing; a worker completed it before the click's UPDATE:
    "Job #1 cancelled." was said of a completed job."""
    job = JobFactory(executing=True)
    with completed_before_its_update(job.pk):
        response = admin_client.post(reverse("admin:pgjobs_job_cancel", args=[job.pk]), follow=True)
    assert messages_of(response) == [f"Job #{job.pk} had already finished (completed)."]
    assert state_of(job) == S.COMPLETED


def test_state_changes_refuse_get(admin_client):
    job = JobFactory(discarded=True)
    assert admin_client.get(reverse("admin:pgjobs_job_retry", args=[job.pk])).status_code == 405
    assert state_of(job) == S.DISCARDED


def test_state_changes_need_a_csrf_token(admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    job = JobFactory(discarded=True)
    assert client.post(reverse("admin:pgjobs_job_retry", args=[job.pk])).status_code == 403
    assert state_of(job) == S.DISCARDED


@pytest.mark.parametrize("view", ["pgjobs_job_retry", "pgjobs_job_cancel"])
def test_a_job_deleted_since_its_page_was_shown_is_said_to_be_gone(admin_client, view):
    """It was a bare 404 page."""
    response = admin_client.post(reverse(f"admin:{view}", args=[999999]), follow=True)
    assert response.redirect_chain[0] == (reverse("admin:pgjobs_job_changelist"), 302)
    assert messages_of(response) == [
        "Job #999999 no longer exists (it was deleted or pruned); nothing changed."
    ]


@pytest.mark.parametrize("view", ["pgjobs_job_retry", "pgjobs_job_cancel"])
def test_a_job_deleted_while_it_is_changed_is_said_to_be_gone(admin_client, view):
    """Deleted between the view's read and its UPDATE: a retry said "can't be retried
    now: it is discarded", a cancel "could not be cancelled"."""
    job = JobFactory(discarded=True) if view == "pgjobs_job_retry" else JobFactory(scheduled=True)
    with deleted_before_its_update(job.pk):
        response = admin_client.post(reverse(f"admin:{view}", args=[job.pk]), follow=True)
    assert messages_of(response) == [
        f"Job #{job.pk} no longer exists (it was deleted or pruned); nothing changed."
    ]
    assert not Job.objects.exists()


# -- actions on many jobs -------------------------------------------------------------------


def test_retry_selected_retries_what_can_be_retried_and_leaves_the_rest(admin_client):
    failed, cancelled, running = (
        JobFactory(discarded=True),
        JobFactory(cancelled=True),
        JobFactory(executing=True),
    )
    response = admin_client.post(changelist(), action("retry_jobs", failed, cancelled, running),
                                 follow=True)  # fmt: skip
    assert messages_of(response) == [
        "2 job(s) will run again. Executing, waiting and available jobs were left alone."
    ]
    assert [state_of(j) for j in (failed, cancelled, running)] == [S.AVAILABLE, S.AVAILABLE,
                                                                   S.EXECUTING]  # fmt: skip


@pytest.mark.parametrize("select_across", [False, True], ids=["ticked", "select-all"])
def test_retry_selected_says_jobs_were_left_alone_only_when_some_were(admin_client, select_across):
    """It always added "Executing, waiting and available jobs were left alone.", also of
    a selection that held none. A select-all is checked with one EXISTS, not counted."""
    failed = JobFactory.create_batch(2, discarded=True, queue="mail")
    data = action("retry_jobs", *failed, select_across=select_across)
    response = admin_client.post(changelist() + "?queue=mail", data, follow=True)
    assert messages_of(response) == ["2 job(s) will run again."]
    running = JobFactory(executing=True, queue="mail")
    data = action("retry_jobs", running, select_across=select_across)
    response = admin_client.post(changelist() + "?queue=mail", data, follow=True)
    assert messages_of(response) == [
        "0 job(s) will run again. Executing, waiting and available jobs were left alone."
    ]


def test_retry_selected_retries_every_job_it_can_and_names_those_whose_key_is_held(
    admin_client,
):
    """Two selected jobs of one unique_key failed the whole action on the unique index."""
    older, newer = (JobFactory(queue="reports", unique_key="k", discarded=True) for _ in "ab")
    held = JobFactory(queue="reports", unique_key="h", discarded=True)
    holder = JobFactory(queue="reports", unique_key="h")
    response = admin_client.post(changelist(), action("retry_jobs", older, newer, held),
                                 follow=True)  # fmt: skip
    assert messages_of(response) == [
        "1 job(s) will run again.",
        "2 job(s) left as they were: their unique_key is held by an active job (the newest "
        f"job of a key is the one retried): #{older.pk}, #{held.pk}.",
    ]
    states = [state_of(j) for j in (older, newer, held, holder)]
    assert states == [S.DISCARDED, S.AVAILABLE, S.DISCARDED, S.AVAILABLE]


def test_retry_of_a_job_whose_key_is_held_names_the_holder(admin_client):
    job = JobFactory(queue="reports", unique_key="k", discarded=True)
    holder = JobFactory(queue="reports", unique_key="k")
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]), follow=True)
    assert messages_of(response) == [
        f"Job #{job.pk} can't be retried now: its unique_key 'k' is held by active job "
        f"#{holder.pk}; cancel that job, or retry this one once it has finished."
    ]
    assert state_of(job) == S.DISCARDED


def test_retry_every_discarded_job_names_those_whose_key_is_held(admin_client):
    held = JobFactory(queue="reports", unique_key="k", discarded=True)
    JobFactory(queue="reports", unique_key="k")
    free = JobFactory(queue="reports", discarded=True)
    response = admin_client.post(reverse("admin:pgjobs_job_retry_discarded"), follow=True)
    assert messages_of(response) == [
        "1 discarded job(s) will run again.",
        "1 job(s) left as they were: their unique_key is held by an active job (the newest "
        f"job of a key is the one retried): #{held.pk}.",
    ]
    assert [state_of(j) for j in (held, free)] == [S.DISCARDED, S.AVAILABLE]


#: What the job page's "Run again…" says will happen, said on the bulk retry's page too.
RUNS_AGAIN = "what it did the first time (a mail sent, a payment taken) happens again"


def _hidden_fields(page: str) -> list[tuple[str, str]]:
    """The hidden inputs of a confirmation page's form, as the browser posts them back."""
    return re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)


def _words(response) -> str:
    """A page's text with its line breaks and runs of spaces as single spaces."""
    return " ".join(response.content.decode().split())


def test_retry_selected_with_completed_jobs_asks_first_and_changes_nothing(admin_client):
    """It ran them again at once: a second welcome mail, a second charge, for every
    completed job in the selection, where the job page's "Run again…" asks first."""
    done = JobFactory.create_batch(2, completed=True)
    failed, running = JobFactory(discarded=True), JobFactory(executing=True)
    selection = action("retry_jobs", *done, failed, running)
    response = admin_client.post(changelist(), selection)
    assert response.status_code == 200
    page = _words(response)
    assert "Run completed jobs again?" in page
    assert "Retry 3 job(s)? 2 of them completed, and would run again." in page
    assert RUNS_AGAIN in page and '<input type="submit" value="Yes, retry them">' in page
    assert f'<a href="{changelist()}" class="button cancel-link">No, take me back</a>' in page
    fields = _hidden_fields(page)
    assert ("confirmed", "yes") in fields and ("action", "retry_jobs") in fields
    selected = [value for name, value in fields if name == "_selected_action"]
    assert selected == [str(j.pk) for j in (*done, failed, running)]
    states = [state_of(j) for j in (*done, failed, running)]
    assert states == [S.COMPLETED, S.COMPLETED, S.DISCARDED, S.EXECUTING]
    # Only "yes" is a yes.
    for answer in ("", "no", "YES", "1"):
        again = admin_client.post(changelist(), {**selection, "confirmed": answer})
        assert again.status_code == 200 and b"Run completed jobs again?" in again.content
    assert state_of(done[0]) == S.COMPLETED


def _answered_yes(question) -> dict[str, list[str]]:
    """What a confirmation page's "Yes" posts: its form's hidden fields."""
    assert question.status_code == 200, question.status_code
    answer: dict[str, list[str]] = {}
    for name, value in _hidden_fields(question.content.decode()):
        answer.setdefault(name, []).append(value)
    return answer


def test_retry_selected_with_completed_jobs_once_confirmed_runs_them_again(admin_client):
    done, failed, running = (
        JobFactory(completed=True),
        JobFactory(discarded=True),
        JobFactory(executing=True),
    )
    page = admin_client.post(changelist(), action("retry_jobs", done, failed, running))
    response = admin_client.post(changelist(), _answered_yes(page), follow=True)
    assert messages_of(response) == [
        "2 job(s) will run again. Executing, waiting and available jobs were left alone."
    ]
    assert [state_of(j) for j in (done, failed, running)] == [S.AVAILABLE, S.AVAILABLE,
                                                              S.EXECUTING]  # fmt: skip


def _retry_running_completed_after_the_question(admin_client, done: Job, running: Job) -> None:
    """Retries ``done`` (completed) and ``running``, asked about ``done``; a worker
    completes ``running`` between the question and its "Yes": it is left alone."""
    question = admin_client.post(changelist(), action("retry_jobs", done, running))
    assert "Retry 2 job(s)? 1 of them completed" in _words(question)
    yes = _answered_yes(question)
    with completed_before_its_update(running.pk):  # a worker ran it meanwhile
        response = admin_client.post(changelist(), yes, follow=True)
    assert messages_of(response) == [
        "1 job(s) will run again.",
        "1 job(s) completed after you were asked; left alone — select them again to re-run.",
    ]
    assert [state_of(j) for j in (done, running)] == [S.AVAILABLE, S.COMPLETED]


def test_retry_selected_leaves_alone_jobs_completed_after_the_question(admin_client):
    """The question counted the jobs completed then; one that completed between it and
    the "Yes" ran again without having been counted (a mail nobody was asked about)."""
    done, running = JobFactory(completed=True), JobFactory(retryable=True)
    _retry_running_completed_after_the_question(admin_client, done, running)


@pytest.mark.parametrize("skew", [timedelta(minutes=10), timedelta(minutes=-10)],
                         ids=["web-host-ahead", "web-host-behind"])  # fmt: skip
def test_retry_selecteds_question_is_timed_by_the_database_not_the_web_host(
    admin_client, monkeypatch, skew
):
    """Completions are stamped by the database's clock (a worker's, near it): a web host
    10 minutes ahead ran again a job that completed after the question, unasked; one 10
    minutes behind left alone the job it asked about, as "completed after you were
    asked"."""
    from django_pgjobs.admin import jobs as jobs_admin

    real = timezone.now
    monkeypatch.setattr(jobs_admin, "timezone", SimpleNamespace(now=lambda: real() + skew))
    done, running = JobFactory(completed=True), JobFactory(retryable=True)
    Job.objects.filter(pk=done.pk).update(finished_at=Now())  # by the database's clock
    _retry_running_completed_after_the_question(admin_client, done, running)


def test_retry_selected_without_a_question_leaves_alone_jobs_completed_meanwhile(admin_client):
    """No completed job among them, so no question: one completing between that check
    and the UPDATE ran again unasked."""
    failed, running = JobFactory(discarded=True), JobFactory(retryable=True)
    with completed_before_its_update(running.pk):
        response = admin_client.post(changelist(), action("retry_jobs", failed, running),
                                     follow=True)  # fmt: skip
    assert messages_of(response) == [
        "1 job(s) will run again.",
        "1 job(s) completed meanwhile; left alone — select them again to re-run.",
    ]
    assert [state_of(j) for j in (failed, running)] == [S.AVAILABLE, S.COMPLETED]


def test_retry_of_every_job_matching_a_filter_asks_under_that_filter(admin_client):
    """With "select all", the page's Yes posts to the list under the same filter: the
    jobs retried are those the question counted, not every job."""
    mail = [JobFactory(completed=True, queue="mail"), JobFactory(discarded=True, queue="mail")]
    other = JobFactory(completed=True, queue="default")
    url = changelist() + "?queue=mail"
    response = admin_client.post(url, action("retry_jobs", mail[0], select_across=True))
    page = _words(response)
    assert "Retry 2 job(s)? 1 of them completed, and would run again." in page
    assert ("select_across", "1") in _hidden_fields(page)
    assert '<form method="post">' in page  # posts to this URL, its filter with it
    assert f'<a href="{url}" class="button cancel-link">No, take me back</a>' in page
    admin_client.post(url, _answered_yes(response))
    assert {state_of(j) for j in mail} == {S.AVAILABLE}
    assert state_of(other) == S.COMPLETED


def test_the_bulk_retry_and_the_job_page_warn_in_the_same_words(admin_client):
    job = JobFactory(completed=True)
    one = admin_client.post(reverse("admin:pgjobs_job_retry", args=[job.pk]))
    many = admin_client.post(changelist(), action("retry_jobs", job))
    assert RUNS_AGAIN in _words(one) and RUNS_AGAIN in _words(many)


def test_the_bulk_retry_s_question_needs_a_csrf_token_and_a_post(admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    job = JobFactory(completed=True)
    confirmed = {**action("retry_jobs", job), "confirmed": "yes"}
    assert client.post(changelist(), confirmed).status_code == 403
    client.get(changelist(), confirmed)  # an action is a POST: this is a (bad) filter
    assert state_of(job) == S.COMPLETED
    client = Client()  # the page's form carries the token
    client.force_login(admin_user)
    page = client.post(changelist(), action("retry_jobs", job)).content.decode()
    assert 'name="csrfmiddlewaretoken"' in page


def test_cancel_selected_cancels_unfinished_jobs_only(admin_client):
    waiting, done = JobFactory(scheduled=True), JobFactory(completed=True)
    admin_client.post(changelist(), action("cancel_jobs", waiting, done))
    assert [state_of(waiting), state_of(done)] == [S.CANCELLED, S.COMPLETED]


def test_select_across_acts_on_every_job_matching_the_filter(admin_client):
    mail = JobFactory.create_batch(3, discarded=True, queue="mail")
    other = JobFactory(discarded=True)
    # The browser posts the ticked rows of the page along with "select all".
    data = action("retry_jobs", mail[0], select_across=True)
    admin_client.post(changelist() + "?queue=mail", data)
    assert {state_of(j) for j in mail} == {S.AVAILABLE}
    assert state_of(other) == S.DISCARDED


def test_delete_asks_first_then_deletes_all_but_executing_jobs(admin_client):
    old, running = JobFactory(completed=True), JobFactory(executing=True)
    response = admin_client.post(changelist(), action("delete_jobs", old, running))
    assert response.status_code == 200 and b"Yes, delete" in response.content
    assert Job.objects.count() == 2, "nothing deleted before confirmation"
    admin_client.post(changelist(), {**action("delete_jobs", old, running), "confirmed": "yes"})
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]


def test_delete_asks_with_the_bulk_retry_s_form_and_its_yes_deletes_under_the_filter(
    admin_client,
):
    """The bulk Delete's question is the bulk Retry's form (one template): the selection
    posted back to this URL, its filter with it, a Yes and a way back to the list."""
    mail = [JobFactory(completed=True, queue="mail"), JobFactory(discarded=True, queue="mail")]
    other = JobFactory(completed=True, queue="default")
    url = changelist() + "?queue=mail"
    response = admin_client.post(url, action("delete_jobs", mail[0], select_across=True))
    page = _words(response)
    assert '<form method="post">' in page and 'name="csrfmiddlewaretoken"' in page
    assert '<input type="submit" value="Yes, delete">' in page
    assert f'<a href="{url}" class="button cancel-link">No, take me back</a>' in page
    fields = _hidden_fields(page)
    assert [value for name, value in fields if name == "_selected_action"] == [str(mail[0].pk)]
    assert {("action", "delete_jobs"), ("index", "0"), ("select_across", "1"),
            ("confirmed", "yes")} <= set(fields)  # fmt: skip
    assert Job.objects.count() == 3, "nothing deleted before confirmation"
    confirmed = {}
    for name, value in fields:
        confirmed.setdefault(name, []).append(value)
    admin_client.post(url, confirmed)  # the page's "Yes"
    assert list(Job.objects.values_list("pk", flat=True)) == [other.pk]


def test_delete_of_more_jobs_than_are_counted_asks_with_one_sign_of_an_estimate(
    admin_client, monkeypatch
):
    """The question said "about ≈5": the tally's own sign says it is an estimate."""
    monkeypatch.setattr(stats, "COUNT_CAP", 3)
    jobs = JobFactory.create_batch(5, completed=True)
    response = admin_client.post(changelist(), action("delete_jobs", jobs[0], select_across=True))
    assert response.status_code == 200 and b"Yes, delete" in response.content
    page = response.content.decode()
    assert "<p>Delete ≈" in page and "about ≈" not in page


def test_retry_all_discarded_retries_only_discarded_jobs_matching_the_filter(admin_client):
    mail = JobFactory.create_batch(3, discarded=True, queue="mail")
    elsewhere = JobFactory(discarded=True, queue="default")
    done = JobFactory(completed=True, queue="mail")
    url = reverse("admin:pgjobs_job_retry_discarded")
    response = admin_client.post(url, {"filters": "queue=mail&state=discarded"})
    assert response.status_code == 302 and "queue=mail" in response["Location"]
    assert {state_of(j) for j in mail} == {S.AVAILABLE}
    assert state_of(elsewhere) == S.DISCARDED and state_of(done) == S.COMPLETED


def test_retry_all_discarded_refuses_a_bad_filter_and_changes_nothing(admin_client):
    job = JobFactory(discarded=True)
    url = reverse("admin:pgjobs_job_retry_discarded")
    response = admin_client.post(url, {"filters": "state=nonsense"}, follow=True)
    assert b"Nothing retried" in response.content
    assert state_of(job) == S.DISCARDED


def test_the_retry_all_button_shows_when_discarded_jobs_match(admin_client):
    JobFactory(discarded=True)
    page = admin_client.get(changelist()).content.decode()
    assert "pgjobs-retry-discarded" in page
    # It said "Retry all 1 discarded jobs matching this filter".
    assert "Retry the 1 discarded job matching this filter" in " ".join(page.split())
    JobFactory(discarded=True)
    page = admin_client.get(changelist()).content.decode()
    assert "Retry all 2 discarded jobs matching this filter" in " ".join(page.split())
    Job.objects.all().delete()
    assert b"pgjobs-retry-discarded" not in admin_client.get(changelist()).content


# -- permissions: a staff user without the permission gets 403 and nothing changes ---------


def _single(name):
    return lambda job: (reverse(f"admin:pgjobs_job_{name}", args=[job.pk]), {})


@pytest.mark.parametrize(
    "request_for, trait, needs",
    [
        (_single("retry"), "discarded", "change_job"),
        (_single("cancel"), "scheduled", "change_job"),
        (_single("delete"), "completed", "delete_job"),
        (lambda job: (changelist(), action("retry_jobs", job)), "discarded", "change_job"),
        (
            lambda job: (
                changelist(),
                {
                    **action("retry_jobs", job),
                    "confirmed": "yes",
                    "completed_by": timezone.now().isoformat(),
                },
            ),
            "completed",
            "change_job",
        ),
        (lambda job: (changelist(), action("cancel_jobs", job)), "scheduled", "change_job"),
        (
            lambda job: (changelist(), {**action("delete_jobs", job), "confirmed": "yes"}),
            "completed",
            "delete_job",
        ),
        (
            lambda job: (reverse("admin:pgjobs_job_retry_discarded"), {"filters": ""}),
            "discarded",
            "change_job",
        ),
    ],
    ids=[
        "retry",
        "cancel",
        "delete",
        "retry_jobs",
        "retry_jobs_completed",
        "cancel_jobs",
        "delete_jobs",
        "retry_all",
    ],
)
def test_without_the_permission_an_operator_gets_403_and_nothing_changes(request_for, trait, needs):
    job = JobFactory(**{trait: True})
    url, data = request_for(job)
    viewer = staff_client("view_job")
    assert viewer.post(url, {**data, "post": "yes"}).status_code == 403
    assert state_of(job) == trait
    # ...and with the permission, the same request goes through.
    allowed = staff_client("view_job", needs, username="allowed")
    assert allowed.post(url, {**data, "post": "yes"}).status_code in (200, 302)
    assert not Job.objects.filter(pk=job.pk, state=trait).exists()


def test_without_any_permission_the_admin_pages_are_closed(client):
    job = JobFactory()
    nobody = staff_client()
    assert nobody.get(changelist()).status_code == 403
    assert nobody.get(detail(job)).status_code == 403
    assert nobody.get(reverse("admin:pgjobs_dashboard")).status_code == 403
    assert nobody.get(reverse("admin:pgjobs_dashboard_data")).status_code == 403
    anonymous = client.get(reverse("admin:pgjobs_dashboard_data"))
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]


# -- pipelines ----------------------------------------------------------------------------


def test_the_detail_page_shows_what_a_job_waits_for_and_what_needs_it(admin_client):
    from testproject.demo.tasks import add

    first = add.enqueue(1, 1)
    second = Job.enqueue("testproject.demo.tasks.add", args=[2, 2], depends_on=[first])
    page = admin_client.get(detail(second)).content.decode()
    assert "Waits for (1 unfinished)" in page and f"#{first.pk} testproject.demo.tasks.add" in page
    assert "Waiting for 1 unfinished dependency" in page
    page = admin_client.get(detail(first)).content.decode()
    assert f"#{second.pk} testproject.demo.tasks.add" in page.split("Needed by")[1]


def test_deleting_an_unfinished_dependency_cancels_what_waits_for_it(admin_client):
    from testproject.demo.tasks import add

    first = add.enqueue(1, 1)
    second = Job.enqueue("testproject.demo.tasks.add", args=[2, 2], depends_on=[first])
    admin_client.post(changelist(), {**action("delete_jobs", first), "confirmed": "yes"})
    assert not Job.objects.filter(pk=first.pk).exists()
    assert state_of(second) == S.CANCELLED, "it would otherwise wait for ever"


def test_an_executing_job_cannot_be_deleted_from_its_page(admin_client):
    job = JobFactory(executing=True)
    url = reverse("admin:pgjobs_job_delete", args=[job.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert state_of(job) == S.EXECUTING


def test_delete_from_the_job_page_goes_through_delete_many(admin_client):
    job = JobFactory(completed=True)
    admin_client.post(reverse("admin:pgjobs_job_delete", args=[job.pk]), {"post": "yes"})
    assert not Job.objects.filter(pk=job.pk).exists()


def test_the_result_count_shows_only_while_searching(admin_client):
    JobFactory(args=["needle"])
    assert b"results (" not in admin_client.get(changelist()).content
    page = admin_client.get(changelist(), {"q": "needle"}).content.decode()
    assert "1 result (" in page


def _breadcrumbs(response) -> tuple[str, str]:
    """The breadcrumbs' element and their words, as the page renders them."""
    html = response.content.decode()
    found = re.search(r'<(ol|div) class="breadcrumbs">(.*?)</\1>', html, re.S)
    assert found, html
    words = " ".join(re.sub(r"<[^>]+>|&rsaquo;", " ", found.group(2)).split())
    return found.group(1), words


def test_every_page_builds_its_breadcrumbs_as_the_admin_of_this_django_does(admin_client):
    """Django 6 lists breadcrumbs in an <ol>, 5.2 in a <div>: each styles only its own
    (an <ol> on 5.2 renders as a numbered list)."""
    own, _ = _breadcrumbs(admin_client.get(changelist()))  # Django's own template
    job, done = JobFactory(discarded=True), JobFactory(completed=True)
    token = {"name": "cron", "queues": '["default"]', "can_read": "on", "active": "on"}
    pages = {
        "job": admin_client.get(detail(job)),
        "dashboard": admin_client.get(reverse("admin:pgjobs_dashboard")),
        "delete": admin_client.post(changelist(), action("delete_jobs", job)),
        "retry": admin_client.post(changelist(), action("retry_jobs", done)),
        "token": admin_client.post(reverse("admin:pgjobs_apitoken_add"), token),
    }
    trails = {name: _breadcrumbs(response) for name, response in pages.items()}
    assert trails == {
        "job": (own, f"Home Background jobs Jobs Job #{job.pk}"),
        "dashboard": (own, "Home Background jobs Dashboard"),
        "delete": (own, "Home Background jobs Jobs Delete jobs"),
        "retry": (own, "Home Background jobs Jobs Retry jobs"),
        "token": (own, "Home Background jobs API tokens cron"),
    }


# -- a unique_key taken after a REPEATABLE READ request's snapshot -----------------------------


@pytest.fixture
def repeatable_read_requests(monkeypatch):
    """Every request in a transaction (ATOMIC_REQUESTS) at REPEATABLE READ (the
    database's OPTIONS isolation_level), as a project configures them."""
    own = connection.settings_dict
    connection.close()
    monkeypatch.setitem(own, "ATOMIC_REQUESTS", True)
    isolation = psycopg.IsolationLevel.REPEATABLE_READ
    monkeypatch.setitem(own, "OPTIONS", {**own.get("OPTIONS", {}), "isolation_level": isolation})
    yield
    connection.close()  # the next connection is made as configured before


def key_taken_before(monkeypatch, name: str, key: str) -> list[int]:
    """``transitions.name`` takes ``key`` first: a job of it enqueued and committed on
    another connection, after the request's snapshot. The holder's id, once taken."""
    from django_pgjobs import transitions

    real, holders = getattr(transitions, name), []

    def taken_first(*args, **kwargs):
        holders.append(
            on_another_connection(
                lambda: Job.enqueue("testproject.demo.tasks.add", [1, 1], unique_key=key).pk
            )
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(transitions, name, taken_first)
    return holders


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("selected", ["ticked", "every discarded job"])
def test_a_bulk_retry_whose_key_was_taken_after_the_requests_snapshot_says_to_try_again(
    admin_client, repeatable_read_requests, monkeypatch, selected
):
    """The holder, committed after the request's snapshot, is out of its sight: every
    try's UPDATE is refused, and retry_many's UniqueKeyConflict was a 500."""
    job = JobFactory(discarded=True, unique_key="report-1")
    holders = key_taken_before(monkeypatch, "retry_many", "report-1")
    if selected == "ticked":
        response = admin_client.post(changelist(), action("retry_jobs", job), follow=True)
    else:
        response = admin_client.post(reverse("admin:pgjobs_job_retry_discarded"), follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "Nothing retried: unique_key 'report-1' of queue 'default' was taken by a job "
        "committed after this request began, which its REPEATABLE READ transaction can't "
        "see. Try again: the retry then leaves the jobs whose key is held as they were."
    ]
    assert state_of(job) == S.DISCARDED
    assert Job.objects.get(pk=holders[0]).state == S.AVAILABLE
    # Tried again, in a new request: the job is left as it was, and said to be.
    again = admin_client.post(changelist(), action("retry_jobs", job), follow=True)
    assert messages_of(again)[0] == "0 job(s) will run again."
    assert state_of(job) == S.DISCARDED


@pytest.mark.django_db(transaction=True)
def test_a_retry_whose_key_was_taken_after_the_requests_snapshot_says_to_try_again(
    admin_client, repeatable_read_requests, monkeypatch
):
    """One job: the refused UPDATE raises UniqueKeyHeld, whose holder the snapshot
    can't read either; said without a 500, and to try again."""
    job = JobFactory(discarded=True, unique_key="report-1")
    holders = key_taken_before(monkeypatch, "retry", "report-1")
    url = reverse("admin:pgjobs_job_retry", args=[job.pk])
    response = admin_client.post(url, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        f"Job #{job.pk} can't be retried now: its unique_key 'report-1' is held by an "
        "active job this request can't see yet; try again to see which, then cancel "
        "that job, or retry this one once it has finished."
    ]
    assert state_of(job) == S.DISCARDED and holders
