"""The dashboard and the numbers behind it; the bulk transitions the admin relies on."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from django_pgjobs import db, stats, transitions
from django_pgjobs.admin.timeline import timeline
from django_pgjobs.models import Job, Queue, WorkerProcess
from django_pgjobs.states import JobState
from tests.admin_helpers import staff_client
from tests.factories import JobFactory, QueueFactory, WorkerProcessFactory
from tests.test_hardening_rows import sql

pytestmark = pytest.mark.django_db
S = JobState
NOW = datetime(2026, 3, 1, 12, 30, 20, tzinfo=UTC)


# -- stats ------------------------------------------------------------------------------------


def failure(attempt: object, at: object) -> dict[str, object]:
    """A record of Job.errors as the worker writes it."""
    at = at.isoformat() if isinstance(at, datetime) else at
    return {"attempt": attempt, "at": at, "error": "E: x", "traceback": ""}


def failed_per_minute(series: list[dict]) -> dict[int, int]:
    return {p["minute"].minute: p["failed"] for p in series if p["failed"]}


def test_throughput_counts_completions_and_failures_per_minute():
    JobFactory.create_batch(3, completed=True, finished_at=NOW - timedelta(minutes=2))
    last = NOW - timedelta(minutes=2)
    JobFactory(discarded=True, attempt=1, finished_at=last, errors=[failure(1, last)])
    JobFactory(retryable=True, errors=[failure(1, NOW - timedelta(seconds=5))])
    JobFactory(completed=True, finished_at=NOW - timedelta(hours=2))  # out of the window
    series = stats.throughput(NOW)
    assert len(series) == 60
    assert series[-1]["minute"] == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    by_minute = {p["minute"].minute: (p["completed"], p["failed"]) for p in series}
    assert by_minute[28] == (3, 1) and by_minute[30] == (0, 1)
    assert sum(p["completed"] for p in series) == 3


def test_every_failed_attempt_counts_in_the_minute_it_failed():
    """Eight failed attempts are eight failures, not one discarded job."""
    records = [failure(n, NOW - timedelta(minutes=9 - n)) for n in range(1, 9)]
    JobFactory(discarded=True, attempt=8, max_attempts=8, finished_at=NOW, errors=records)
    series = stats.throughput(NOW)
    assert failed_per_minute(series) == {minute: 1 for minute in range(22, 30)}
    assert sum(p["failed"] for p in series) == 8


def test_a_failure_stays_on_the_chart_after_the_job_completes_on_its_retry():
    JobFactory(
        completed=True,
        attempt=2,
        attempted_at=NOW - timedelta(minutes=1),
        finished_at=NOW - timedelta(minutes=1),
        errors=[failure(1, NOW - timedelta(minutes=3))],
    )
    running = JobFactory(executing=True, attempt=3, errors=[failure(2, NOW - timedelta(minutes=4))])
    series = stats.throughput(NOW)
    assert failed_per_minute(series) == {26: 1, 27: 1}
    assert {p["minute"].minute: p["completed"] for p in series if p["completed"]} == {29: 1}
    assert running.state == S.EXECUTING


def test_the_chart_counts_nothing_that_is_no_failed_attempt():
    """A cancelled dependent's record (it never ran), old failures, and records
    no worker wrote: nothing to count, and nothing that breaks the dashboard."""
    gone = NOW - timedelta(minutes=1)
    JobFactory(state=S.CANCELLED, finished_at=gone, errors=[failure(0, gone)])
    JobFactory(discarded=True, finished_at=gone, errors=[failure(1, NOW - timedelta(hours=3))])
    odd = [failure("2", gone), failure(2, "yesterday"), failure(2, None), "text", 7, [1]]
    JobFactory(discarded=True, finished_at=gone, errors=odd)
    JobFactory(retryable=True, errors={"attempt": 1, "at": gone.isoformat()})
    JobFactory(retryable=True, errors="failed")
    assert failed_per_minute(stats.throughput(NOW)) == {}


#: A failure's time, as JSON that jsonb keeps and Python's json can't read back.
UNREADABLE_TIMES = {
    "an integer of 5,001 digits": "1" + "0" * 5000,
    "an array nested 3,000 deep": "[" * 3000 + "]" * 3000,
}


@pytest.mark.parametrize("at", UNREADABLE_TIMES.values(), ids=list(UNREADABLE_TIMES))
def test_a_failure_time_python_cant_read_is_skipped_not_a_500(admin_client, at):
    """A record's "at" written by SQL as such JSON came out of sql/throughput.sql in
    the failures' JSON text, which json.loads refused (ValueError, RecursionError):
    the dashboard and its data were a 500 while the job stayed in the hour."""
    gone = NOW - timedelta(minutes=1)
    JobFactory(discarded=True, finished_at=gone, errors=[failure(1, gone)])
    for state in ("retryable", "discarded"):
        odd = JobFactory(state=state, finished_at=gone, errors=[])
        sql(
            "UPDATE pgjobs_job SET errors = jsonb_build_array("
            "jsonb_build_object('attempt', 1, 'at', %s::jsonb)) WHERE id = %s",
            [at, odd.pk],
        )
    assert failed_per_minute(stats.throughput(NOW)) == {29: 1}
    Job.objects.update(finished_at=timezone.now())  # in the pages' hour
    for page in ("admin:pgjobs_dashboard", "admin:pgjobs_dashboard_data"):
        assert admin_client.get(reverse(page)).status_code == 200, page


# The first slice (stats.SLICE_SECONDS long) of the minute 12:28 of the dashboard's hour.
SLICE = datetime(2026, 3, 1, 12, 28, tzinfo=UTC)


def finished_in_slice(count: int, within: float | None = None, **fields: object) -> None:
    """``count`` jobs finished evenly over the first ``within`` seconds of SLICE (all of it)."""
    step = (within or stats.SLICE_SECONDS) / count
    Job.objects.bulk_create(
        JobFactory.build(
            **{"completed": True, **fields},
            finished_at=SLICE + timedelta(seconds=step * (n + 0.5)),
        )
        for n in range(count)
    )


def minute_of(series: list[dict], minute: int) -> dict:
    return next(p for p in series if p["minute"].minute == minute)


def test_a_slice_of_at_most_per_slice_jobs_is_counted_exactly():
    finished_in_slice(stats.PER_SLICE - 1)
    finished_in_slice(3, discarded=True, errors=[failure(1, SLICE)])
    point = minute_of(stats.throughput(NOW), 28)
    # More than PER_SLICE: only PER_SLICE of them are read, the slice is estimated.
    assert point["approximate"] is True
    Job.objects.filter(state=S.DISCARDED).delete()
    point = minute_of(stats.throughput(NOW), 28)
    assert point == {
        "minute": datetime(2026, 3, 1, 12, 28, tzinfo=UTC),
        "completed": stats.PER_SLICE - 1,
        "failed": 0,
        "approximate": False,
    }


def test_a_busy_slice_is_estimated_and_marked_approximate():
    """100 jobs in one slice, PER_SLICE read: within 5% (evenly spaced ones come out
    under by (PER_SLICE - 2.5) / (PER_SLICE - 2): 3.8% at 15)."""
    finished_in_slice(100)
    series = stats.throughput(NOW)
    point = minute_of(series, 28)
    assert point["approximate"] is True and 95 <= point["completed"] <= 105
    assert [p["minute"].minute for p in series if p["approximate"]] == [28]


def test_a_burst_that_ends_within_its_slice_is_not_stretched_over_the_rest_of_it():
    """300 jobs in the first 1.5 s of a slice, then none: the estimate ends at the last."""
    finished_in_slice(300, within=1.5)
    point = minute_of(stats.throughput(NOW), 28)
    assert point["approximate"] is True and 285 <= point["completed"] <= 315


def test_a_burst_at_the_start_of_a_busy_slice_is_not_taken_to_last_all_of_it():
    """A schedule firing 300 jobs on the minute (done in 2 s) on top of 11 jobs/s: the
    slice is read at both ends, so the burst's rate is not stretched over the other
    28 s (taken from the first jobs alone, it came out about 7 times too many)."""
    finished_in_slice(300, within=2.0)
    finished_in_slice(11 * stats.SLICE_SECONDS)
    point = minute_of(stats.throughput(NOW), 28)
    real = 300 + 11 * stats.SLICE_SECONDS
    assert point["approximate"] is True and 0.7 * real <= point["completed"] <= 1.3 * real


def test_the_failures_of_an_estimated_slice_are_weighted_as_its_jobs():
    finished_in_slice(100, discarded=True, attempt=1, errors=[failure(1, SLICE)])
    point = minute_of(stats.throughput(NOW), 28)
    assert point["approximate"] is True and 95 <= point["failed"] <= 105
    assert point["completed"] == 0


@pytest.mark.parametrize("plan", ["index", "sort"])
def test_jobs_finished_at_one_instant_count_as_those_read_rather_than_without_bound(plan):
    """A bulk cancel: no rate to scale by, so the PER_SLICE read stand for themselves (≈).
    Read by a sort rather than the index, jobs of one instant come in any order: the
    slice's last ones read from its end were some of its first (11 read, taken as the
    whole slice: exact, and 49 jobs missing)."""
    Job.objects.bulk_create(
        JobFactory.build(completed=True, finished_at=SLICE + timedelta(seconds=3))
        for _ in range(60)
    )
    off = {"enable_indexscan": "off", "enable_bitmapscan": "off"} if plan == "sort" else {}
    with db.local_settings(**off):
        point = minute_of(stats.throughput(NOW), 28)
    assert (point["completed"], point["approximate"]) == (stats.PER_SLICE, True)


def test_an_hour_of_random_traffic_is_estimated_within_ten_percent():
    """4 jobs/s finishing at random for 20 minutes (4,800; 120 a slice of 30 s): the
    hour's total within 10% (its standard error about 4%), each minute within 50%
    (about 20%)."""
    rng = random.Random(21)
    first = NOW.replace(second=0) - timedelta(minutes=25)
    moments = sorted(rng.uniform(0, 1200) for _ in range(4800))
    Job.objects.bulk_create(
        JobFactory.build(completed=True, finished_at=first + timedelta(seconds=at))
        for at in moments
    )
    series = stats.throughput(NOW)
    busy = [p for p in series if first <= p["minute"] < first + timedelta(minutes=20)]
    assert len(busy) == 20 and all(p["approximate"] for p in busy)
    assert abs(sum(p["completed"] for p in series) / 4800 - 1) < 0.10
    exact = Counter(int(at // 60) for at in moments)
    assert all(abs(p["completed"] / exact[n] - 1) < 0.5 for n, p in enumerate(busy))


def test_an_empty_hour_is_all_zeros_and_exact(admin_client):
    assert all(
        (p["completed"], p["failed"], p["approximate"]) == (0, 0, False)
        for p in stats.throughput(NOW)
    )
    data = admin_client.get(reverse("admin:pgjobs_dashboard_data")).json()
    assert data["totals"] == {"completed": 0, "failed": 0, "approximate": False}


def test_estimated_totals_are_shown_with_an_approximately_sign(admin_client):
    now = timezone.now()
    Job.objects.bulk_create(
        JobFactory.build(completed=True, finished_at=now - timedelta(seconds=n * 0.05))
        for n in range(1, 100)
    )
    data = admin_client.get(reverse("admin:pgjobs_dashboard_data")).json()
    assert data["totals"]["approximate"] is True
    assert any(point["approximate"] for point in data["throughput"])
    page = admin_client.get(reverse("admin:pgjobs_dashboard")).content.decode()
    assert 'id="pgjobs-completed-total">≈' in page and 'id="pgjobs-failed-total">≈' in page
    assert 'id="pgjobs-sampled">' in page  # the legend says why, shown


def test_exact_totals_have_no_approximately_sign(admin_client):
    JobFactory(completed=True)
    page = admin_client.get(reverse("admin:pgjobs_dashboard")).content.decode()
    assert 'id="pgjobs-completed-total">1<' in page
    assert 'id="pgjobs-sampled" hidden>' in page


def test_queue_depths_count_unfinished_jobs_and_the_oldest_available():
    QueueFactory(name="reports", paused=True)
    JobFactory(queue="reports", run_at=NOW - timedelta(minutes=10))
    JobFactory(queue="reports", run_at=NOW - timedelta(minutes=1))
    JobFactory(queue="reports", scheduled=True)
    JobFactory(queue="orphan")  # no queue row: still listed
    depths = {q["name"]: q for q in stats.queue_depths(NOW)}
    reports = depths["reports"]["depth"]
    assert (reports["available"], reports["scheduled"]) == (2, 1)
    assert depths["reports"]["paused"] is True
    assert depths["reports"]["oldest_available_at"] == NOW - timedelta(minutes=10)
    assert depths["orphan"]["depth"]["available"] == 1


def test_a_due_retry_is_waiting_for_a_worker_too():
    QueueFactory(name="reports")
    JobFactory(queue="reports", run_at=NOW - timedelta(minutes=1))
    JobFactory(queue="reports", retryable=True, run_at=NOW - timedelta(minutes=30))
    JobFactory(queue="reports", retryable=True, run_at=NOW + timedelta(minutes=30))  # not due
    depths = {q["name"]: q for q in stats.queue_depths(NOW)}
    assert depths["reports"]["oldest_available_at"] == NOW - timedelta(minutes=30)


def test_tallies_are_exact_under_the_cap_and_estimated_above():
    JobFactory.create_batch(4)
    assert stats.tally(Job.objects.all(), cap=10) == stats.Tally(4)
    over = stats.tally(Job.objects.all(), cap=2)
    assert not over.exact and over.value >= 3 and str(over).startswith("≈")


def test_worker_summary_separates_live_from_stale():
    WorkerProcessFactory()
    WorkerProcessFactory(heartbeat_at=NOW - timedelta(hours=1))
    assert stats.worker_summary() == {"live": 1, "stale": 1}


# -- bulk transitions ----------------------------------------------------------------------


def test_retry_many_is_one_update_that_respects_the_state_machine():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    retried = [JobFactory(**{trait: True}) for trait in ("discarded", "completed", "cancelled")]
    kept = [JobFactory(executing=True), JobFactory(waiting=True), JobFactory()]
    exhausted = JobFactory(discarded=True, attempt=3, max_attempts=3)
    with CaptureQueriesContext(connection) as queries:
        assert transitions.retry_many(Job.objects.all(), include_completed=True) == 4
    # One statement, in a savepoint of its own (a key taken meanwhile spoils nothing).
    said = [q["sql"].split()[0] for q in queries]
    assert said == ["SAVEPOINT", "UPDATE", "RELEASE"]
    assert {Job.objects.get(pk=j.pk).state for j in retried} == {S.AVAILABLE}
    assert [Job.objects.get(pk=j.pk).state for j in kept] == [S.EXECUTING, S.WAITING, S.AVAILABLE]
    assert Job.objects.get(pk=exhausted.pk).max_attempts == 4


def test_cancel_many_cancels_unfinished_jobs_and_takes_leases_away():
    running, waiting, done = (
        JobFactory(executing=True),
        JobFactory(scheduled=True),
        JobFactory(completed=True),
    )
    assert transitions.cancel_many(Job.objects.all()) == 2
    running.refresh_from_db()
    assert running.state == S.CANCELLED and running.lease is None
    assert Job.objects.get(pk=waiting.pk).state == S.CANCELLED
    assert Job.objects.get(pk=done.pk).state == S.COMPLETED


# -- the timeline ---------------------------------------------------------------------------


def test_the_timeline_reads_enqueued_then_each_failure_then_the_end():
    job = JobFactory(discarded=True)
    kinds = [event.kind for event in timeline(job)]
    assert kinds == ["enqueued", "failed", "failed", "failed", "discarded"]


def test_a_job_cancelled_while_it_ran_keeps_that_attempt_on_its_timeline():
    job = JobFactory(executing=True, attempt=2, errors=[failure(1, NOW - timedelta(minutes=5))])
    started = Job.objects.get(pk=job.pk).attempted_at
    transitions.cancel(job)
    events = [(e.kind, e.title, e.at) for e in timeline(Job.objects.get(pk=job.pk))]
    assert events[1:] == [
        ("failed", "Attempt 1 failed", NOW - timedelta(minutes=5)),
        ("started", "Attempt 2 started", started),
        ("cancelled", "Cancelled", Job.objects.get(pk=job.pk).finished_at),
    ]
    waiting = JobFactory(scheduled=True)  # never ran: nothing to keep
    transitions.cancel(waiting)
    assert [e.kind for e in timeline(waiting)] == ["enqueued", "cancelled"]


def test_a_malformed_error_record_does_not_break_the_timeline():
    job = JobFactory(retryable=True, errors=[{"at": "not a date"}, {}])
    events = timeline(job)
    assert [e.at for e in events[1:3]] == [None, None] and events[-1].kind == "pending"
    for errors in ("text", {"attempt": 1}, [7, "x", None]):
        assert timeline(JobFactory(state=S.CANCELLED, errors=errors))[-1].kind == "cancelled"


# -- the page and its data ------------------------------------------------------------------


def test_the_dashboard_page_draws_from_our_own_static_files(admin_client):
    JobFactory(completed=True)
    response = admin_client.get(reverse("admin:pgjobs_dashboard"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="pgjobs-chart"' in page and "pgjobs/dashboard.js" in page
    assert 'id="pgjobs-initial"' in page and "http" not in page.split("pgjobs-initial")[1][:50]
    assert reverse("admin:pgjobs_dashboard_data") in page


def test_the_dashboard_data_is_json_with_throughput_depths_and_ages(admin_client):
    QueueFactory(name="mail")
    JobFactory(queue="mail")
    JobFactory(completed=True)
    WorkerProcessFactory()
    response = admin_client.get(reverse("admin:pgjobs_dashboard_data"))
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert len(data["throughput"]) == 60 and data["totals"]["completed"] == 1
    mail = next(q for q in data["queues"] if q["name"] == "mail")
    assert mail["depth"]["available"] == 1 and mail["oldest_available_seconds"] >= 0
    assert data["workers"] == {"live": 1, "stale": 0}


def test_a_view_only_operator_can_watch_the_dashboard():
    viewer = staff_client("view_job")
    assert viewer.get(reverse("admin:pgjobs_dashboard")).status_code == 200
    assert viewer.get(reverse("admin:pgjobs_dashboard_data")).status_code == 200


def test_the_app_index_links_to_the_dashboard(admin_client):
    page = admin_client.get(reverse("admin:app_list", args=["pgjobs"])).content.decode()
    assert reverse("admin:pgjobs_dashboard") in page


def test_delete_many_is_a_fixed_number_of_statements(django_assert_max_num_queries):
    JobFactory.create_batch(20, completed=True)
    JobFactory(executing=True)
    with django_assert_max_num_queries(8):  # savepoint, lookups, edges, jobs, cancel: no per-row
        assert transitions.delete_many(Job.objects.all()) == 20
    assert Job.objects.get().state == S.EXECUTING


def test_the_chart_is_read_without_parallel_workers_and_the_setting_put_back(monkeypatch):
    # Two parallel workers took 6 ms to start for the chart's 2 ms of reading at ten
    # million jobs; a caller's own setting holds again after it.
    from django.db import connection, transaction

    def workers() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('max_parallel_workers_per_gather')")
            return cursor.fetchone()[0]

    seen = []
    fetch_dicts = db.fetch_dicts

    def noting_workers(*args, **kwargs):
        seen.append(workers())
        return fetch_dicts(*args, **kwargs)

    monkeypatch.setattr(db, "fetch_dicts", noting_workers)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 3")
        assert len(stats.throughput()) == 60
        assert seen == ["0"] and workers() == "3"


def _no_worker_warning(admin_client, url: str, opening: str = "No worker is running") -> str | None:
    page = admin_client.get(url).content.decode()
    start = page.find(opening)
    return None if start < 0 else page[start : page.index("</li>", start)]


@pytest.mark.parametrize("page", ["admin:pgjobs_job_changelist", "admin:pgjobs_dashboard"])
def test_the_job_list_and_dashboard_say_when_due_jobs_wait_with_no_worker(admin_client, page):
    # A newcomer enqueued a job before starting any worker, and it just sat there.
    url = reverse(page)
    job = JobFactory(queue="default")
    assert _no_worker_warning(admin_client, url) is None  # just enqueued: not waiting long
    Job.objects.filter(pk=job.pk).update(run_at=timezone.now() - timedelta(minutes=2))
    warning = _no_worker_warning(admin_client, url)
    assert re.search(r"a job of queue &#x27;default&#x27; has waited 2m( 1?\ds)?", warning)
    assert "`python manage.py runworker` runs" in warning
    worker = WorkerProcessFactory()
    assert _no_worker_warning(admin_client, url) is None  # a worker runs: the wait is its own
    stale = timezone.now() - timedelta(hours=1)
    WorkerProcess.objects.filter(pk=worker.pk).update(started_at=stale, heartbeat_at=stale)
    assert _no_worker_warning(admin_client, url) is not None
    Queue.objects.update_or_create(name="default", defaults={"paused": True})
    assert _no_worker_warning(admin_client, url) is None  # a paused queue waits on purpose


@pytest.mark.parametrize("page", ["admin:pgjobs_job_changelist", "admin:pgjobs_dashboard"])
def test_they_say_when_the_running_workers_serve_other_queues(admin_client, page):
    # A newcomer created a queue in the admin while the workers ran with --queues that
    # leave it out, and the queue's jobs just sat there.
    url, opening = reverse(page), "No running worker serves queue"
    Queue.objects.get_or_create(name="reports")
    worker = WorkerProcessFactory(queues=["default"])
    job = JobFactory(queue="reports")
    Job.objects.filter(pk=job.pk).update(run_at=timezone.now() - timedelta(minutes=2))
    warning = _no_worker_warning(admin_client, url, opening)
    assert re.search(r"queue &#x27;reports&#x27;, and a job of it has waited 2m( 1?\ds)?", warning)
    assert "Start one with `--queues reports`" in warning
    assert _no_worker_warning(admin_client, url) is None  # a worker does run
    # Rows written by SQL with queues that are no list of names serve nothing, and
    # break nothing.
    for odd in ({"reports": 1}, "reports", 0, [["reports"]]):
        WorkerProcessFactory(queues=odd)
        assert _no_worker_warning(admin_client, url, opening) is not None
    WorkerProcess.objects.filter(pk=worker.pk).update(queues=["default", "reports"])
    assert _no_worker_warning(admin_client, url, opening) is None
    WorkerProcess.objects.filter(pk=worker.pk).update(queues=["default"])
    Queue.objects.filter(name="reports").update(paused=True)
    assert _no_worker_warning(admin_client, url, opening) is None  # paused on purpose


def test_with_every_queue_served_no_job_is_read():
    # Read as one join, the unserved queues' jobs were looked for among every due job:
    # 290 ms at 400,000 due jobs of served queues. Names first: none, no job read.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_pgjobs.admin.dashboard import no_worker_warning

    JobFactory.create_batch(3, queue="default", run_at=timezone.now() - timedelta(hours=1))
    WorkerProcessFactory(queues=list(Queue.objects.values_list("name", flat=True)))
    with CaptureQueriesContext(connection) as queries:
        assert no_worker_warning() is None
    assert not [query for query in queries if '"pgjobs_job"' in query["sql"]], (
        queries.captured_queries
    )
