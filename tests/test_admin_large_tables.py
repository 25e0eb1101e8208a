"""The job list on large tables: counts only where an index serves them, estimates
elsewhere, a bounded scan for a page, and odd input answered without a 500."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_pgjobs import stats
from django_pgjobs.admin import jobs as job_admin
from django_pgjobs.admin import paginator
from django_pgjobs.models import Job
from django_pgjobs.states import JobState
from tests.admin_helpers import action, changelist
from tests.conftest import cancelled_once_running
from tests.factories import JobFactory, finished_jobs_analyzed

pytestmark = pytest.mark.django_db


def shown(response) -> list[int]:
    return [job.pk for job in response.context["cl"].result_list]


def tabs(response) -> dict[str, stats.Tally]:
    return {tab["state"]: tab["tally"] for tab in response.context["state_tabs"]}


def no_count_of_rows(queries: CaptureQueriesContext) -> bool:
    return not any("count(" in q["sql"].lower() for q in queries.captured_queries)


@pytest.fixture(autouse=True)
def as_if_large(monkeypatch):
    """These tests stand for large tables on a few rows: a table of at most
    ``stats.FEW_JOBS`` jobs is counted whatever the filter (0: never)."""
    monkeypatch.setattr(stats, "FEW_JOBS", 0)


# -- a small table: every count is exact --------------------------------------------------


@pytest.mark.parametrize("query", [{"task": "shop.tasks.sync"}, {"q": "x"}])
def test_a_small_table_is_counted_under_any_filter(admin_client, monkeypatch, query):
    """A new project's admin, filtered by task (a link of its sidebar), said "≈1" in
    every state's tab, and "Retry all ≈1 discarded jobs" over four: the planner's
    estimates of a table it has barely seen. Counting a table this small reads little."""
    monkeypatch.setattr(stats, "FEW_JOBS", 100)
    JobFactory.create_batch(4, discarded=True, task="shop.tasks.sync", args=["x"])
    JobFactory.create_batch(3, completed=True, task="shop.tasks.sync", args=["x"])
    JobFactory.create_batch(2, completed=True)
    response = admin_client.get(changelist(), query)
    assert response.context["cl"].paginator.countable
    assert tabs(response)["discarded"] == stats.Tally(4)
    assert tabs(response)["cancelled"] == stats.Tally(0)
    assert response.context["cl"].result_count == 7
    assert "Retry all 4 discarded jobs" in response.content.decode()
    filtered = admin_client.get(changelist(), {**query, "state": "discarded"})
    cl = filtered.context["cl"]
    assert cl.result_count == 4 and not cl.paginator.is_estimate
    assert all(tally.exact for tally in tabs(filtered).values())


# -- where counting is cheap (state, queue, a search by id) -----------------------------


@pytest.mark.parametrize("query", [{}, {"state": "completed"}, {"queue": "mail", "p": "1"}])
def test_under_indexed_filters_the_list_counts_up_to_the_cap(admin_client, monkeypatch, query):
    monkeypatch.setattr(stats, "COUNT_CAP", 3)
    JobFactory.create_batch(5, completed=True, queue="mail")
    JobFactory(discarded=True, queue="mail")
    response = admin_client.get(changelist(), query)
    cl = response.context["cl"]
    assert cl.paginator.countable and cl.paginator.is_estimate and cl.result_count >= 4
    assert b"about " in response.content
    assert tabs(response)["discarded"] == stats.Tally(1)  # under the cap: exact
    assert not tabs(response)["completed"].exact


@pytest.mark.parametrize(
    "query, statements", [({}, 1), ({"queue": "mail"}, 1), ({"state": "completed"}, 2)]
)
def test_the_list_and_its_tabs_are_counted_in_one_or_two_statements(
    admin_client, query, statements
):
    JobFactory.create_batch(3, completed=True, queue="mail")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist(), query)
    counts = [q for q in queries.captured_queries if "count(*)" in q["sql"].lower()]
    # The seven tabs in one; without a state filter the list's count is their sum;
    # no EXPLAIN: all under the cap.
    assert len(counts) == statements
    assert not any("explain" in q["sql"].lower() for q in queries.captured_queries)
    assert response.context["cl"].result_count == 3


@pytest.mark.parametrize("cap", [3, 100])
def test_under_a_state_filter_its_count_is_its_tabs(admin_client, monkeypatch, cap):
    monkeypatch.setattr(stats, "COUNT_CAP", cap)
    JobFactory.create_batch(5, completed=True, queue="mail")
    JobFactory(discarded=True, queue="mail")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist(), {"state": "completed", "queue": "mail"})
    counts = [q["sql"] for q in queries.captured_queries if "count(*)" in q["sql"].lower()]
    # Counted once, for the list: the tab shows that count.
    assert sum("'completed'" in sql for sql in counts) == 1
    tally = tabs(response)["completed"]
    assert tally == response.context["cl"].paginator.tally
    assert tally.exact == (cap >= 5)
    assert tabs(response)["discarded"] == stats.Tally(1)


def test_tallies_agree_with_one_count_each(monkeypatch):
    JobFactory.create_batch(4, completed=True)
    JobFactory.create_batch(2, discarded=True, queue="mail")
    sets = [Job.objects.all(), Job.objects.filter(queue="mail"), Job.objects.none()]
    sets.append(Job.objects.filter(state="completed", queue="mail"))
    assert stats.tallies(sets, cap=3) == [
        stats.Tally(max(stats.estimate(sets[0]), 4), exact=False),
        stats.Tally(2),
        stats.Tally(0),
        stats.Tally(0),
    ]
    assert stats.tallies([]) == [] and stats.estimates([]) == []


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "count(*)" in q["sql"].lower()]


def test_a_tally_past_its_cap_is_estimated_without_counting_for_a_while():
    JobFactory.create_batch(4, completed=True)
    JobFactory(discarded=True)
    clock = Clock()
    sets = [Job.objects.filter(state="completed"), Job.objects.filter(state="discarded")]
    first = stats.tallies(sets, cap=2, clock=clock)
    assert not first[0].exact and first[0].value >= 3 and first[1] == stats.Tally(1)
    clock.now += stats.OVER_CAP_SECONDS - 0.1
    with CaptureQueriesContext(connection) as queries:
        again = stats.tallies(sets, cap=2, clock=clock)
    assert again == first
    # Only the exact one is counted; the other is its estimate of then, not asked again.
    [count] = counted(queries)
    assert "discarded" in count and "completed" not in count
    assert not any(q["sql"].startswith("EXPLAIN") for q in queries.captured_queries)
    clock.now += 0.1  # the window is over: counted again, exact now it is under the cap
    Job.objects.filter(pk__in=sets[0].values("pk")[:2]).delete()
    with CaptureQueriesContext(connection) as queries:
        assert stats.tallies(sets, cap=2, clock=clock) == [stats.Tally(2), stats.Tally(1)]
    assert len(counted(queries)) == 1
    assert not any(q["sql"].startswith("EXPLAIN") for q in queries.captured_queries)


def test_a_tally_past_its_cap_is_remembered_per_count():
    JobFactory.create_batch(3, completed=True)
    clock = Clock()
    assert not stats.tally(Job.objects.filter(state="completed"), cap=2, clock=clock).exact
    with CaptureQueriesContext(connection) as queries:
        # Another cap or another filter is another count: counted.
        assert stats.tally(Job.objects.filter(state="completed"), cap=3, clock=clock).exact
        assert stats.tally(Job.objects.filter(state="discarded"), cap=2, clock=clock).exact
        assert not stats.tally(Job.objects.filter(state="completed"), cap=2, clock=clock).exact
    assert len(counted(queries)) == 2


def test_a_tally_that_was_exact_is_counted_every_time():
    JobFactory.create_batch(2, completed=True)
    clock = Clock()
    jobs = Job.objects.filter(state="completed")
    with CaptureQueriesContext(connection) as queries:
        assert [stats.tally(jobs, cap=2, clock=clock) for _ in range(3)] == [stats.Tally(2)] * 3
    assert len(counted(queries)) == 3
    JobFactory(completed=True)
    assert not stats.tally(jobs, cap=2, clock=clock).exact  # not an answer kept from before


def test_a_changed_setting_forgets_the_tallies_past_their_cap(settings):
    JobFactory.create_batch(3, completed=True)
    clock = Clock()
    jobs = Job.objects.filter(state="completed")
    assert not stats.tally(jobs, cap=2, clock=clock).exact
    settings.PGJOBS = {**getattr(settings, "PGJOBS", {})}
    Job.objects.filter(pk__in=jobs.values("pk")[:1]).delete()
    assert stats.tally(jobs, cap=2, clock=clock) == stats.Tally(2)


def a_table_the_planner_knows(completed: int, discarded: int) -> None:
    """``completed`` and ``discarded`` jobs, with the statistics of a real ANALYZE."""
    JobFactory.create_batch(completed, completed=True)
    JobFactory.create_batch(discarded, discarded=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")


def counts_of(queries: CaptureQueriesContext, state: str) -> list[str]:
    return [sql for sql in counted(queries) if f"'{state}'" in sql]


def test_a_state_the_planner_puts_past_the_threshold_is_estimated_not_counted(
    admin_client, monkeypatch
):
    # ESTIMATE_PAST is a million at COUNT_CAP 10,000: here 150 of 300 jobs are "millions".
    monkeypatch.setattr(stats, "ESTIMATE_PAST", 150)
    a_table_the_planner_knows(completed=300, discarded=5)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist())
    assert not counts_of(queries, "completed")  # never counted, not even up to the cap
    assert len([q for q in queries.captured_queries if q["sql"].startswith("EXPLAIN")]) == 1
    completed = tabs(response)["completed"]
    assert not completed.exact and str(completed).startswith("≈")
    # Under the threshold: exact, counted as before.
    assert tabs(response)["discarded"] == stats.Tally(5) and counts_of(queries, "discarded")
    assert response.context["cl"].paginator.is_estimate and b"about " in response.content
    assert "≈".encode() in response.content
    # The state's own list: its count is the estimate too, not counted.
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist(), {"state": "completed"})
    assert not counts_of(queries, "completed")
    assert response.context["cl"].paginator.is_estimate


def test_under_the_threshold_a_state_is_counted_exactly(admin_client, monkeypatch):
    monkeypatch.setattr(stats, "ESTIMATE_PAST", 1000)
    a_table_the_planner_knows(completed=300, discarded=5)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist())
    assert tabs(response)["completed"] == stats.Tally(300) and counts_of(queries, "completed")
    assert tabs(response)["discarded"] == stats.Tally(5)
    assert response.context["cl"].result_count == 305


def test_a_table_pruned_without_analyze_shows_an_estimate_never_a_wrong_count(monkeypatch):
    monkeypatch.setattr(stats, "ESTIMATE_PAST", 150)
    a_table_the_planner_knows(completed=300, discarded=0)
    Job.objects.filter(state="completed").delete()  # the statistics still say 300
    [tally] = stats.tallies([Job.objects.filter(state="completed")])
    assert not tally.exact  # "≈", not "0" nor "300" as if counted


def test_a_table_its_statistics_call_small_is_counted_without_asking_the_planner():
    # As a table never analyzed (reltuples -1): under ESTIMATE_PAST, nothing to ask.
    a_table_the_planner_knows(completed=300, discarded=5)
    with CaptureQueriesContext(connection) as queries:
        assert stats.tallies([Job.objects.filter(state="completed")]) == [stats.Tally(300)]
    assert not any(q["sql"].startswith("EXPLAIN") for q in queries.captured_queries)


def test_the_planners_word_on_a_count_is_reused_for_a_while(monkeypatch):
    monkeypatch.setattr(stats, "ESTIMATE_PAST", 150)
    a_table_the_planner_knows(completed=300, discarded=5)
    clock = Clock()
    sets = [Job.objects.filter(state="completed"), Job.objects.filter(state="discarded")]
    first = stats.tallies(sets, clock=clock)
    assert not first[0].exact and first[1] == stats.Tally(5)
    clock.now += stats.OVER_CAP_SECONDS - 0.1
    with CaptureQueriesContext(connection) as queries:
        assert stats.tallies(sets, clock=clock) == first
    # No EXPLAIN, no statistics read: the small state is counted, the large one not.
    assert [q["sql"] for q in queries.captured_queries] == counts_of(queries, "discarded")
    assert len(queries.captured_queries) == 1


def test_estimates_of_contradictory_filters_are_asked_one_by_one():
    # The planner drops a branch it proves empty from the UNION ALL: still one per set.
    both = Job.objects.filter(state="completed").filter(state="discarded")
    assert len(stats.estimates([Job.objects.all(), both, Job.objects.all()])) == 3


# -- where it is not (task, date, text search, snoozed) ---------------------------------


UNINDEXED = [
    {"task": "testproject.demo.tasks.add"},
    {"q": "needle"},
    {"snoozed": "ever"},
]


@pytest.mark.parametrize("query", UNINDEXED)
def test_under_other_filters_nothing_is_counted(admin_client, query):
    JobFactory.create_batch(3, completed=True, args=["needle"], meta={"snoozed": {"count": 1}})
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist(), query)
    assert response.status_code == 200 and no_count_of_rows(queries)
    cl = response.context["cl"]
    # Fewer than a page: the count is exact after all (what the page found).
    assert not cl.paginator.countable and cl.result_count == 3 and not cl.paginator.is_estimate
    assert len(shown(response)) == 3
    assert all(not tally.exact for tally in tabs(response).values())  # planner estimates
    assert b"about " not in response.content


def test_a_filter_matching_more_than_a_page_is_paged_and_estimated(admin_client, monkeypatch):
    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    made = JobFactory.create_batch(5, task="testproject.demo.tasks.record")
    JobFactory.create_batch(3)
    newest = sorted((job.pk for job in made), reverse=True)
    query = {"task": "testproject.demo.tasks.record"}
    first = admin_client.get(changelist(), query)
    assert shown(first) == newest[:2] and first.context["cl"].paginator.is_estimate
    assert first.context["cl"].result_count >= 3 and b"about " in first.content
    last = admin_client.get(changelist(), {**query, "p": "3"})
    assert shown(last) == newest[4:] and last.context["cl"].result_count == 5
    assert not last.context["cl"].paginator.is_estimate


def test_uncounted_the_list_and_its_tabs_are_estimated_in_one_statement(admin_client, monkeypatch):
    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    JobFactory.create_batch(4, completed=True, args=["needle"])
    JobFactory(discarded=True, args=["needle"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist(), {"q": "needle"})
    explained = [q for q in queries.captured_queries if q["sql"].startswith("EXPLAIN")]
    assert len(explained) == 1 and no_count_of_rows(queries)
    cl = response.context["cl"]
    # More than a page: the list's estimate is its tabs' (at least what it has seen).
    estimated = sum(tally.value for tally in tabs(response).values())
    assert cl.paginator.is_estimate and cl.result_count == max(estimated, 3)


def test_state_estimates_are_the_planners_per_state():
    JobFactory.create_batch(30, completed=True, task="testproject.demo.tasks.record")
    JobFactory.create_batch(10, discarded=True)
    JobFactory.create_batch(5, completed=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")
    for jobs in (Job.objects.filter(task="testproject.demo.tasks.record"),
                 Job.objects.filter(args__contains=["x"]), Job.objects.none()):  # fmt: skip
        asked = stats.estimates([jobs.filter(state=state) for state in JobState])
        found = stats.state_estimates(jobs)
        assert all(not tally.exact for tally in found.values())
        for state, planner in zip(JobState.values, asked, strict=True):
            # Its arithmetic (the filter and the state independent), up to rounding.
            assert abs(found[state].value - planner) <= max(1, planner // 100), state


@pytest.mark.parametrize("page", ["99", "0", "-1", "x", "9" * 30])
def test_pages_past_the_end_or_no_page_answer_cleanly(admin_client, page):
    JobFactory.create_batch(3)
    response = admin_client.get(changelist(), {"task": "testproject.demo.tasks.add", "p": page})
    assert response.status_code in (200, 302)
    if response.status_code == 302:
        assert "e=1" in response["Location"]


def test_date_drill_down_finds_the_days_jobs(admin_client):
    today = JobFactory()
    JobFactory(created_at=timezone.now() - timedelta(days=40))
    now = timezone.localtime()
    response = admin_client.get(
        changelist(),
        {"created_at__year": now.year, "created_at__month": now.month, "created_at__day": now.day},
    )
    assert response.status_code == 200 and shown(response) == [today.pk]


def searches_sleeping(
    monkeypatch: pytest.MonkeyPatch, seconds: float, only: str | None = None
) -> None:
    """The job list's search (of ``only``, or any) costs PostgreSQL ``seconds`` per row
    it reads: a slow scan, for the time limits and an operator's cancel."""
    where = f"pg_sleep({seconds}) IS NOT NULL"
    monkeypatch.setattr(
        job_admin.JobAdmin,
        "get_search_results",
        lambda self, request, queryset, term: (
            queryset.extra(where=[where]) if only is None or term == only else queryset,
            False,
        ),
    )


def test_a_scan_that_takes_too_long_is_cut_short_with_a_message(admin_client, monkeypatch):
    JobFactory.create_batch(3)
    monkeypatch.setattr(paginator, "SCAN_SECONDS", 0.001)
    # A search that costs PostgreSQL a few milliseconds per row: past the limit at once.
    slow = "pg_sleep"
    searches_sleeping(monkeypatch, 0.05, only=slow)
    response = admin_client.get(changelist(), {"q": slow})
    assert response.status_code == 200 and shown(response) == []
    assert response.context["cl"].paginator.timed_out
    assert "No jobs shown" in response.content.decode()
    # The transaction and the session's settings are as before.
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
        cursor.execute("SELECT count(*) FROM pgjobs_job")
        assert cursor.fetchone()[0] == 3


@pytest.mark.django_db(transaction=True)
def test_a_scan_an_operator_cancels_says_so_not_that_it_was_slow(admin_client, monkeypatch):
    # pg_cancel_backend sends the same SQLSTATE as the time limit (57014): the page
    # said "finding them took more than 5 s" of a scan stopped long before.
    JobFactory.create_batch(3)
    # A search that costs PostgreSQL a second per row: the operator stops it.
    searches_sleeping(monkeypatch, 1.01)
    with cancelled_once_running("pg_sleep(1.01)"):
        response = admin_client.get(changelist(), {"q": "slow"})
    assert response.status_code == 200 and shown(response) == []
    cut = response.context["cl"].paginator
    assert (cut.cancelled, cut.timed_out) == (True, False)
    page = response.content.decode()
    assert "the database cancelled finding them" in page and "Reload the page" in page
    assert "took more than" not in page


def test_a_deep_page_of_a_counted_list_is_found_within_the_time_limit(admin_client, monkeypatch):
    monkeypatch.setattr(stats, "COUNT_CAP", 3)
    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    made = sorted((job.pk for job in JobFactory.create_batch(7)), reverse=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pgjobs_job")  # past the cap, the count is the planner's
    for page, deep in ((2, False), (3, True), (4, True)):
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(changelist(), {"state": "available", "p": page})
        assert shown(response) == made[(page - 1) * 2 : page * 2]
        limited = any("statement_timeout" in q["sql"] for q in queries.captured_queries)
        assert limited == deep and response.context["cl"].paginator.countable
    # Oldest first: the first page, not a deep one.
    response = admin_client.get(changelist(), {"state": "available", "o": "1"})
    assert shown(response) == sorted(made)[:2]


def test_a_deep_page_that_takes_too_long_says_how_to_reach_old_jobs(admin_client, monkeypatch):
    JobFactory.create_batch(5)
    monkeypatch.setattr(stats, "COUNT_CAP", 2)  # estimated past 2: at least 3, two pages
    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    monkeypatch.setattr(paginator, "SCAN_SECONDS", 0.001)
    # Counted as under an indexed filter, but each row costs PostgreSQL 20 ms.
    monkeypatch.setattr(job_admin, "countable", lambda request: True)
    searches_sleeping(monkeypatch, 0.02)
    response = admin_client.get(changelist(), {"q": "slow", "p": "2"})
    assert response.status_code == 200 and shown(response) == []
    assert response.context["cl"].paginator.timed_out
    assert "No jobs shown: page 2 starts after 2 jobs" in response.content.decode()
    assert "Sort by id ascending" in response.content.decode()


def test_the_scan_leaves_the_callers_settings_as_they_were(admin_client):
    JobFactory.create_batch(2)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 1")
    admin_client.get(changelist(), {"q": "needle"})
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
        cursor.execute("SHOW max_parallel_workers_per_gather")
        assert cursor.fetchone()[0] == "1"


def test_the_retry_questions_count_stops_at_its_time_limit_and_says_it_estimates(
    admin_client, monkeypatch
):
    """Retry of every job under a task filter: no index serves the task, and the
    question's two counts read every row with no time limit (1.6 s at 600,000 jobs for
    a rare task), where the list itself stops after 5 s. Past the limit the page gives
    the planner's estimates, and says so; the retry, once confirmed, is not cut short."""
    finished_jobs_analyzed(count=20_000)
    gone = [JobFactory(task="shop.tasks.gone", completed=True),
            JobFactory(task="shop.tasks.gone", discarded=True)]  # fmt: skip
    monkeypatch.setattr(stats, "COUNT_SECONDS", 0.001)
    url = changelist() + "?task=shop.tasks.gone"
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(url, action("retry_jobs", gone[0], select_across=True))
    assert response.status_code == 200
    page = " ".join(response.content.decode().split())
    assert re.search(r"Retry ≈[\d.,kMG]+ job\(s\)\? ≈[\d.,kMG]+ of them completed, and "
                     r"would run again\.", page), page  # fmt: skip
    assert (
        "These numbers are the planner's estimates: counting the jobs took more than "
        "0.001 s. The retry is not cut short: it runs again every job selected"
    ) in page
    assert any("statement_timeout" in q["sql"] for q in queries.captured_queries)
    with connection.cursor() as cursor:  # the session's settings as they were
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
    yes: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page):
        yes.setdefault(name, []).append(value)
    admin_client.post(url, yes)
    states = set(Job.objects.filter(task="shop.tasks.gone").values_list("state", flat=True))
    assert states == {JobState.AVAILABLE}


@pytest.mark.django_db(transaction=True)
def test_the_retry_questions_count_an_operator_cancels_retries_nothing(admin_client, monkeypatch):
    done = JobFactory(completed=True)
    # A search that costs PostgreSQL a second per row: the operator stops its count.
    searches_sleeping(monkeypatch, 1.01)
    url = changelist() + "?q=slow"
    # The count's statement (stats.tallies), not the list's scan for its page.
    with cancelled_once_running("SELECT (SELECT count(*) FROM ("):
        response = admin_client.post(url, action("retry_jobs", done, select_across=True),
                                     follow=True)  # fmt: skip
    assert response.status_code == 200
    said = [str(m) for m in response.context["messages"]]
    assert len(said) == 1 and re.fullmatch(
        r"Nothing retried: the database cancelled counting the jobs after \d+\.\d s \(an "
        r"operator's pg_cancel_backend\?\)\. Try again\.",
        said[0],
    ), said
    assert Job.objects.get().state == JobState.COMPLETED


# -- an empty table, hostile input ------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [{}, {"state": "discarded"}, {"queue": "mail"}, {"q": "x"}, {"q": "17"}, *UNINDEXED],
)
def test_an_empty_table_answers_every_filter(admin_client, query):
    response = admin_client.get(changelist(), query)
    assert response.status_code == 200 and shown(response) == []
    assert response.context["cl"].result_count == 0


HOSTILE_SEARCHES = ["a\x00b", "%", "_", "%_%", "\\", "'; DROP TABLE pgjobs_job; --", "é" * 5000,
                    "x" * 100_000, "#", "#" + "9" * 40, "9" * 40, " 12 "]  # fmt: skip


@pytest.mark.parametrize("term", HOSTILE_SEARCHES)
def test_hostile_searches_answer_cleanly(admin_client, term):
    JobFactory(args=["100%_done"])
    response = admin_client.get(changelist(), {"q": term})
    assert response.status_code in (200, 302)
    assert Job.objects.count() == 1


def test_a_search_of_bytes_that_are_no_utf8_answers_cleanly(admin_client):
    JobFactory()
    assert admin_client.get(changelist() + "?q=%ED%A0%80%FF").status_code == 200


@pytest.mark.parametrize("term, found", [("%", 1), ("_", 1), ("0%_d", 1), ("50%", 0)])
def test_wildcards_in_a_search_are_plain_characters(admin_client, term, found):
    JobFactory(args=["100%_done"])
    JobFactory(args=["other"])
    response = admin_client.get(changelist(), {"q": term})
    assert len(shown(response)) == found


@pytest.mark.parametrize(
    "dates",
    [
        {"created_at__year": "0"},
        {"created_at__year": "99999"},
        {"created_at__year": "2026", "created_at__month": "13"},
        {"created_at__year": "2026", "created_at__month": "2", "created_at__day": "30"},
        {"created_at__year": "2026", "created_at__month": "x"},
        {"created_at__year": "2026", "created_at__month": "1", "created_at__day": "9" * 30},
        {"created_at__month": "1"},
        {"created_at__day": "1"},
        {"created_at__year": "2026\x00"},
    ],
)
def test_bogus_date_drill_downs_answer_cleanly(admin_client, dates):
    JobFactory(state=JobState.COMPLETED, finished_at=timezone.now())
    response = admin_client.get(changelist(), dates)
    assert response.status_code in (200, 302)


# -- the rows, written without Django's per-cell machinery ------------------------------


@pytest.mark.parametrize("query", [{}, {"queue": "mail", "q": "a&b <i>"}, {"state": "discarded"}])
def test_the_rows_are_djangos_cell_for_cell(admin_client, monkeypatch, query):
    from django.contrib.admin.templatetags.admin_list import items_for_result

    from django_pgjobs.admin.rows import rows

    errors = [{"attempt": 1, "at": "", "error": "KeyError: '<b>'\nmore", "traceback": "..."}]
    JobFactory(discarded=True, queue="mail", args=["a&b <i>", None, 3.5], errors=errors)
    JobFactory(queue="mail", args=[], kwargs={"k": "a&b <i>"}, task="a.b.c")
    JobFactory(executing=True, queue="mail", args="not a list", kwargs=["odd"])
    JobFactory(scheduled=True, queue="mail", meta={"snoozed": {"count": 3}}, args=["a&b <i>"])
    for state in ("completed", "waiting", "retryable", "cancelled"):
        JobFactory(state=state, queue="mail", args=["a&b <i>"])
    cl = admin_client.get(changelist(), query).context["cl"]
    assert cl.result_list
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)  # an executing job's duration
    django_rows = ["".join(items_for_result(cl, job, None)) for job in cl.result_list]
    assert ["".join(row) for row in rows(cl)] == django_rows


def test_the_page_shows_the_fast_rows(admin_client):
    job = JobFactory(args=["visible"])
    content = admin_client.get(changelist(), {"state": "available"}).content.decode()
    assert f'value="{job.pk}" class="action-select"' in content
    assert f'href="/admin/pgjobs/job/{job.pk}/change/?_changelist_filters=state%3Davailable"' in (
        content
    )


@pytest.mark.parametrize("jobs", [0, 1, 3])
def test_each_job_is_a_row_of_the_table(admin_client, jobs):
    shown = [JobFactory() for _ in range(jobs)]
    content = admin_client.get(changelist()).content.decode()
    if not shown:
        assert 'id="result_list"' not in content
        return
    body = content.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert body.count("<tr>") == body.count("</tr>") == jobs
    for job in shown:
        assert body.count(f'value="{job.pk}" class="action-select"') == 1


def test_clipped_text_is_truncators():
    import random

    from django.utils.text import Truncator

    from django_pgjobs.templatetags.pgjobs_admin import clipped

    # Letters, combining marks (not counted), a precomposed letter, markup, an emoji.
    alphabet = ["a", "\u0301", "\u0308", "é", "e\u0301", " ", "\u200b", "<", "&", "\U0001f600"]
    chance = random.Random(21)
    for _ in range(3000):
        text = "".join(chance.choice(alphabet) for _ in range(chance.randint(0, 70)))
        for width in (1, 2, 5, 40, 60):
            assert clipped(text, width) == Truncator(text).chars(width), (text, width)


def test_a_themes_results_template_gets_each_row_apart(admin_client, settings, tmp_path):
    # A theme's change_list_results.html may give each <tr> attributes of its own:
    # rows joined into one item would have them on the first row only.
    theme = tmp_path / "admin"
    theme.mkdir()
    (theme / "change_list_results.html").write_text(
        '<table id="result_list"><tbody>{% for result in results %}'
        '<tr class="{% cycle "row1" "row2" %}">{% for item in result %}{{ item }}{% endfor %}'
        "</tr>{% endfor %}</tbody></table>"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    JobFactory.create_batch(3)
    content = admin_client.get(changelist()).content.decode()
    assert content.count('<tr class="row1">') == 2 and content.count('<tr class="row2">') == 1
