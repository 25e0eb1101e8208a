"""Queue and worker admins: live depth, pausing, the kill switch, all behind permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from django_pgjobs.models import Queue, WorkerProcess
from tests.admin_helpers import action, changelist, staff_client
from tests.factories import JobFactory, QueueFactory, WorkerProcessFactory

pytestmark = pytest.mark.django_db


# -- queues --------------------------------------------------------------------------------


def test_the_queue_list_shows_depth_per_state_and_settings(admin_client):
    QueueFactory(name="mail", concurrency=2, blocking=True)
    JobFactory.create_batch(3, queue="mail")
    JobFactory(queue="mail", executing=True)
    JobFactory(queue="mail", completed=True)  # history, not depth
    response = admin_client.get(changelist("queue"))
    assert response.status_code == 200
    mail = next(q for q in response.context["cl"].result_list if q.name == "mail")
    assert (mail.depth["available"], mail.depth["executing"], mail.depth["retryable"]) == (3, 1, 0)
    assert b'data-pgjobs-depth="mail/available">3<' in response.content
    assert b"pgjobs/dashboard.js" in response.content, "depths refresh themselves"


def test_pause_and_resume_from_the_list(admin_client):
    QueueFactory(name="mail")
    admin_client.post(reverse("admin:pgjobs_queue_pause", args=["mail"]))
    assert Queue.objects.get(name="mail").paused
    admin_client.post(reverse("admin:pgjobs_queue_resume", args=["mail"]))
    assert not Queue.objects.get(name="mail").paused


def test_pause_actions_on_selected_queues(admin_client):
    mail, other = QueueFactory(name="mail"), QueueFactory(name="other")
    admin_client.post(changelist("queue"), action("pause_queues", mail))
    assert Queue.objects.get(name="mail").paused and not Queue.objects.get(name="other").paused
    admin_client.post(changelist("queue"), action("resume_queues", mail, other))
    assert not Queue.objects.filter(paused=True).exists()


def test_the_queue_form_edits_concurrency_and_blocking(admin_client):
    QueueFactory(name="mail")
    url = reverse("admin:pgjobs_queue_change", args=["mail"])
    response = admin_client.post(url, {"priority": 0, "concurrency": 3, "blocking": "on"})
    assert response.status_code == 302, response.content
    queue = Queue.objects.get(name="mail")
    assert (queue.concurrency, queue.blocking) == (3, True)


def test_a_bad_queue_name_is_refused_with_a_clear_message(admin_client):
    response = admin_client.post(
        reverse("admin:pgjobs_queue_add"), {"name": "no spaces", "priority": 0}
    )
    assert response.status_code == 200
    assert b"invalid queue name" in response.content
    assert not Queue.objects.filter(name="no spaces").exists()


@pytest.mark.parametrize(
    "request_for",
    [
        lambda: (reverse("admin:pgjobs_queue_pause", args=["mail"]), {}),
        lambda: (changelist("queue"), action("pause_queues", Queue.objects.get(name="mail"))),
    ],
    ids=["pause_view", "pause_action"],
)
def test_pausing_needs_change_permission(request_for):
    QueueFactory(name="mail")
    url, data = request_for()
    assert staff_client("view_queue").post(url, data).status_code == 403
    assert not Queue.objects.get(name="mail").paused
    staff_client("view_queue", "change_queue", username="allowed").post(url, data)
    assert Queue.objects.get(name="mail").paused


def test_pause_is_post_only(admin_client):
    QueueFactory(name="mail")
    response = admin_client.get(reverse("admin:pgjobs_queue_pause", args=["mail"]))
    assert response.status_code == 405 and not Queue.objects.get(name="mail").paused


# -- workers ---------------------------------------------------------------------------------


def test_the_worker_list_shows_heartbeat_age_and_held_jobs(admin_client, settings):
    settings.PGJOBS = {**settings.PGJOBS, "WORKER_STALE_AFTER": 60}
    live = WorkerProcessFactory()
    dead = WorkerProcessFactory(heartbeat_at=timezone.now() - timedelta(minutes=5))
    JobFactory.create_batch(2, executing=True, worker=live)
    JobFactory(completed=True, worker=live)  # finished jobs are not held
    response = admin_client.get(changelist("workerprocess"))
    rows = {w.pk: w for w in response.context["cl"].result_list}
    assert rows[live.pk].held == 2 and rows[dead.pk].held == 0
    page = response.content.decode()
    assert "(stale)" in page and ("5m 0s ago" in page or "5m 1s ago" in page)


def test_the_worker_page_lists_the_jobs_it_holds_and_offers_stop(admin_client):
    worker = WorkerProcessFactory()
    job = JobFactory(executing=True, worker=worker, task="testproject.demo.tasks.sleep")
    page = admin_client.get(reverse("admin:pgjobs_workerprocess_change", args=[worker.pk]))
    assert f"#{job.pk} testproject.demo.tasks.sleep" in page.content.decode()
    assert b"pgjobs-stop-worker" in page.content and b'name="_save"' not in page.content


def test_stop_flags_the_worker(admin_client):
    worker = WorkerProcessFactory()
    response = admin_client.post(
        reverse("admin:pgjobs_workerprocess_stop", args=[worker.pk]), follow=True
    )
    assert WorkerProcess.objects.get(pk=worker.pk).stop_requested
    # Not "will stop at its next heartbeat": it hears at once (a notification), then
    # stops as on SIGTERM, as stopworker says.
    assert [str(m) for m in response.context["messages"]] == [
        f"Worker {worker.pk} ({worker.host}:{worker.pid}) asked to stop: it stops claiming "
        "now, and stops once its running jobs finish, or hands them back after 30s "
        "(SHUTDOWN_TIMEOUT)."
    ]


def test_stop_action_on_selected_workers(admin_client):
    one, two, _third = WorkerProcessFactory.create_batch(3)
    response = admin_client.post(
        changelist("workerprocess"), action("stop_workers", one, two), follow=True
    )
    flagged = set(WorkerProcess.objects.filter(stop_requested=True).values_list("pk", flat=True))
    assert flagged == {one.pk, two.pk}
    assert [str(m) for m in response.context["messages"]] == [
        "Asked 2 worker(s) to stop: each stops claiming now, and stops once its running "
        "jobs finish, or hands them back after 30s (SHUTDOWN_TIMEOUT)."
    ]


@pytest.mark.parametrize(
    "request_for",
    [
        lambda w: (reverse("admin:pgjobs_workerprocess_stop", args=[w.pk]), {}),
        lambda w: (changelist("workerprocess"), action("stop_workers", w)),
    ],
    ids=["stop_view", "stop_action"],
)
def test_stopping_a_worker_needs_change_permission(request_for):
    worker = WorkerProcessFactory()
    url, data = request_for(worker)
    assert staff_client("view_workerprocess").post(url, data).status_code == 403
    assert not WorkerProcess.objects.get(pk=worker.pk).stop_requested


def test_worker_rows_are_written_by_workers_not_the_admin(admin_client):
    assert admin_client.get(reverse("admin:pgjobs_workerprocess_add")).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_stop_in_the_admin_stops_a_running_worker(threaded_worker, admin_user, wait, settings):
    from django.test import Client

    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.1}
    worker = threaded_worker(poll_interval=0.2)
    client = Client()
    client.force_login(admin_user)
    client.post(reverse("admin:pgjobs_workerprocess_stop", args=[worker.record.pk]))
    wait(lambda: not WorkerProcess.objects.filter(pk=worker.record.pk).exists(), timeout=10)


def test_operators_who_may_only_look_see_no_buttons():
    QueueFactory(name="mail")
    WorkerProcessFactory()
    assert b"formaction" not in staff_client("view_queue").get(changelist("queue")).content
    viewer = staff_client("view_workerprocess", username="viewer")
    assert b"formaction" not in viewer.get(changelist("workerprocess")).content


def test_a_workers_held_jobs_link_lists_exactly_those_jobs(admin_client):
    worker = WorkerProcessFactory()
    held = JobFactory(executing=True, worker=worker)
    JobFactory(executing=True)
    response = admin_client.get(changelist(), {"worker": worker.pk, "state": "executing"})
    assert [job.pk for job in response.context["cl"].result_list] == [held.pk]


def test_editing_or_adding_a_queue_needs_the_permission():
    QueueFactory(name="reports")
    viewer = staff_client("view_queue")
    edit = reverse("admin:pgjobs_queue_change", args=["reports"])
    assert viewer.post(edit, {"priority": 0, "concurrency": 9}).status_code == 403
    assert Queue.objects.get(name="reports").concurrency is None
    response = viewer.post(reverse("admin:pgjobs_queue_add"), {"name": "new", "priority": 0})
    assert response.status_code == 403 and not Queue.objects.filter(name="new").exists()
