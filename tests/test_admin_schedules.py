"""The schedule admin: fire times on the schedule's clock, validation, enable/disable, run now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from django_pgjobs.admin.schedulers import STALE_AFTER
from django_pgjobs.admin.schedules import fire_times
from django_pgjobs.models import Job, Schedule, SchedulerProcess
from tests.admin_helpers import action, changelist, staff_client

pytestmark = pytest.mark.django_db


def make_schedule(**fields) -> Schedule:
    values = {
        "name": "nightly report",
        "cron": "30 9 * * *",
        "timezone": "Asia/Tokyo",
        "task": "testproject.demo.tasks.add",
        "args": [1, 2],
    }
    return Schedule.objects.create(**{**values, **fields})


def test_fire_times_are_on_the_schedules_own_clock():
    schedule = make_schedule()
    times = fire_times(schedule, datetime(2026, 3, 1, 0, 0, tzinfo=UTC))  # 09:00 in Tokyo
    assert [t.strftime("%d %H:%M %Z") for t in times[:2]] == ["01 09:30 JST", "02 09:30 JST"]


def test_the_list_and_the_page_show_next_fire_times_in_the_schedules_timezone(admin_client):
    schedule = make_schedule()
    assert "09:30:00 JST" in admin_client.get(changelist("schedule")).content.decode()
    page = admin_client.get(reverse("admin:pgjobs_schedule_change", args=[schedule.pk]))
    assert page.content.decode().count("09:30:00 JST") == 5


def test_the_page_names_a_plain_tasks_parameters(admin_client):
    """It said "any JSON (the task is not typed)" of add(a, b), and saving without
    arguments then said "args: missing argument 'a' of add()"."""
    schedule = make_schedule()
    page = admin_client.get(reverse("admin:pgjobs_schedule_change", args=[schedule.pk]))
    assert "a: any JSON; b: any JSON (the task is not typed)" in page.content.decode()


def _warning(admin_client) -> str | None:
    page = admin_client.get(changelist("schedule")).content.decode()
    start = page.find("No scheduler is running")
    return None if start < 0 else page[start : page.index("</li>", start)]


def test_the_list_says_when_no_scheduler_fires_its_late_schedules(admin_client):
    # A newcomer added a schedule in the admin and nothing said runscheduler must run.
    schedule = make_schedule(name="hourly", cron="0 * * * *")
    assert _warning(admin_client) is None  # just added: not late yet
    long_ago = timezone.now() - timedelta(minutes=5)
    Schedule.objects.filter(pk=schedule.pk).update(updated_at=long_ago)
    warning = _warning(admin_client)
    assert "schedule &#x27;hourly&#x27; has not been planned by any scheduler" in warning
    assert "`python manage.py runscheduler` runs" in warning
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=long_ago)
    assert re.search(
        r"schedule &#x27;hourly&#x27; is 30\ds late \(limit 60s\)", _warning(admin_client)
    )
    process = SchedulerProcess.objects.create(host="web-1", pid=4242)
    assert _warning(admin_client) is None  # a scheduler runs: lateness is its business
    stale = timezone.now() - STALE_AFTER - timedelta(seconds=10)
    SchedulerProcess.objects.filter(pk=process.pk).update(started_at=stale, heartbeat_at=stale)
    assert _warning(admin_client) is not None
    # Ticks on time with no row: `runscheduler --once` from cron keeps none.
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=timezone.now())
    assert _warning(admin_client) is None
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=long_ago, enabled=False)
    assert _warning(admin_client) is None  # a disabled schedule is never late


def test_a_bad_cron_is_refused_with_a_clear_message(admin_client):
    response = admin_client.post(
        reverse("admin:pgjobs_schedule_add"),
        {"name": "broken", "cron": "61 * * * *", "timezone": "UTC", "catch_up": "latest",
         "jitter": "0", "overlap": "allow", "catch_up_limit": "100",
         "task": "testproject.demo.tasks.add", "args": "[]", "kwargs": "{}"},
    )  # fmt: skip
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "cron" in errors and "61" in str(errors["cron"])
    assert not Schedule.objects.filter(name="broken").exists()


def test_disable_and_enable(admin_client):
    schedule = make_schedule()
    admin_client.post(reverse("admin:pgjobs_schedule_disable", args=[schedule.pk]))
    assert not Schedule.objects.get(pk=schedule.pk).enabled
    admin_client.post(changelist("schedule"), action("enable_schedules", schedule))
    assert Schedule.objects.get(pk=schedule.pk).enabled


def test_run_now_enqueues_the_schedules_job_at_once(admin_client):
    schedule = make_schedule(args=[20, 22])
    response = admin_client.post(reverse("admin:pgjobs_schedule_run_now", args=[schedule.pk]))
    assert response.status_code == 302
    job = Job.objects.get()
    assert (job.task, job.args, job.meta.get("schedule")) == (
        schedule.task,
        [20, 22],
        schedule.name,
    )
    assert Schedule.objects.get(pk=schedule.pk).last_fire_at is None, "a run now is not a tick"


def test_run_now_of_a_schedule_whose_task_is_gone_says_so(admin_client):
    schedule = make_schedule()
    Schedule.objects.filter(pk=schedule.pk).update(task="testproject.demo.tasks.removed")
    response = admin_client.post(changelist("schedule"), action("run_schedules_now", schedule),
                                 follow=True)  # fmt: skip
    assert "nothing enqueued" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "request_for",
    [
        lambda s: (reverse("admin:pgjobs_schedule_disable", args=[s.pk]), {}),
        lambda s: (reverse("admin:pgjobs_schedule_run_now", args=[s.pk]), {}),
        lambda s: (changelist("schedule"), action("disable_schedules", s)),
        lambda s: (changelist("schedule"), action("run_schedules_now", s)),
    ],
    ids=["disable", "run_now", "disable_action", "run_now_action"],
)
def test_without_change_permission_an_operator_gets_403_and_nothing_changes(request_for):
    schedule = make_schedule()
    url, data = request_for(schedule)
    assert staff_client("view_schedule").post(url, data).status_code == 403
    assert Schedule.objects.get(pk=schedule.pk).enabled and not Job.objects.exists()
