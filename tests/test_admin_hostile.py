"""The job list and dashboard against odd rows and odd query strings.

Rows written by SQL past every Python check (but within the database's CHECKs),
and query strings no page of ours links to: each page answers 200 with every value
escaped, or refuses the query string (a redirect to ``?e=1`` that says why, or a
400) without writing anything. Never a 500.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, urljoin, urlsplit

import django
import pytest
from django.contrib.admin.utils import quote as admin_quote
from django.urls import reverse
from django.utils import timezone

from django_pgjobs import stats
from django_pgjobs.models import ApiToken, Job, Queue, Schedule, WorkerProcess
from django_pgjobs.states import JobState
from tests.admin_helpers import changelist, messages_of
from tests.factories import ConnectorFactory, JobFactory, QueueFactory, WorkerProcessFactory
from tests.test_hardening_rows import insert_job, sql

pytestmark = pytest.mark.django_db


def shown(response) -> list[int]:
    return [job.pk for job in response.context["cl"].result_list]


# -- the search box ---------------------------------------------------------------------


@pytest.mark.parametrize("term", ["²", "¹²", "#²", "①", "٣", "#٣", "1²"])
def test_digits_int_cant_read_are_searched_as_text(admin_client, monkeypatch, term):
    """``str.isdigit`` is true of superscripts and circled digits, which ``int()``
    refuses: such a term was a 500 (in the search and again in the list's count)."""
    monkeypatch.setattr(stats, "FEW_JOBS", 0)  # as on a large table: no count of text
    job = JobFactory(args=[f"n{term}"])
    JobFactory()
    response = admin_client.get(changelist(), {"q": term})
    assert response.status_code == 200
    assert shown(response) == [job.pk]  # found as text in the arguments, not as an id
    assert not response.context["cl"].paginator.countable


def test_a_job_id_is_still_found_by_number(admin_client):
    job, _ = JobFactory(), JobFactory()
    for term in (str(job.pk), f"#{job.pk}", f" {job.pk} "):
        response = admin_client.get(changelist(), {"q": term})
        assert shown(response) == [job.pk] and response.context["cl"].paginator.countable
    assert Job.objects.count() == 2


# -- query strings no page links to ---------------------------------------------------------

#: Query strings of the job list, each refused (?e=1 or 400) or shown (200).
ODD_QUERIES = [
    "state=nope", "state=completed&state=nope", "state=completed&state=discarded", "state=",
    "snoozed=nope", "queue=", "task=", "p=-1", "p=0", "p=", "p=1e3", "p=99999999999999999999",
    "task=x&p=99999999999999999999", "task=x&p=184467440737095516", "o=garbage", "o=-",
    "o=99", "o=1.2.3.-0", "o=-99999999999999999999", "all=", "all=&task=x", "e=1",
    "e=1&state=nope", "_changelist_filters=state%3Dnope", "_facets=1", "_popup=1",
    "_to_field=task", "_to_field=id", "worker__host=x", "worker=abc", "id__in=1,2,x",
    "priority__gt=99999999999", "timeout__gt=1e309", "timeout=nan", "lease=zzz",
    "args__contains=%7B", "meta__snoozed__count__gt=x", "run_at__hour=99", "run_at__time=25:00",
    "run_at__date=0000-01-01", "finished_at__gte=0001-01-01", "finished_at__gte=10000-01-01",
    "q=" + "x" * 10_000, "q=%5C%5C%25_%27", "q=%00", "q=%E2%80%AE%E2%80%8B",
    "created_at__year=%C2%B2", "created_at__year=%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96",
    "created_at__year=1", "created_at__year=9998&created_at__month=12&created_at__day=31",
    "created_at__year=2026&created_at__month=%C2%B2", "created_at__month=13",
    # Accepted by filter(), failing only once Django writes the SQL (ValueError) or
    # PostgreSQL runs it (DataError): each was a 500.
    "finished_at__year=0", "finished_at__year=10000", "run_at__year=99999999999999999999",
    "run_at__iso_year=0", "task__regex=(", "task__iregex=[", "errors__0__error__regex=(",
    "task__regex=a&task__regex=)", "id=99999999999999999999", "id__in=1,99999999999999999999",
    "id__gt=99999999999999999999", "id__lt=-99999999999999999999",
    "created_at__gte=0001-01-01T00:00:00%2B14:00", "created_at__lt=9999-12-31T23:59:59-12:00",
    "priority__in=-32769,32768", "attempt=2147483648",
    # Django's drill-down ends a period at the start of the next: past year 9999.
    "created_at__year=9999", "created_at__year=9999&created_at__month=12",
    "created_at__year=9999&created_at__month=12&created_at__day=31",
]  # fmt: skip


# A date alone for a datetime lookup: Django makes it aware in the current time zone,
# warning as it does for any such admin URL; what the test looks at is the answer.
@pytest.mark.filterwarnings("ignore:DateTimeField Job.finished_at received a naive datetime")
@pytest.mark.parametrize("query", ODD_QUERIES)
def test_odd_query_strings_are_shown_or_refused(admin_client, query):
    JobFactory()
    JobFactory(completed=True)
    before = list(Job.objects.order_by("pk").values())
    response = admin_client.get(f"{changelist()}?{query}")
    assert response.status_code in (200, 302, 400), response.status_code
    if response.status_code == 302:
        assert response["Location"] == f"{changelist()}?e=1"
    assert list(Job.objects.order_by("pk").values()) == before


@pytest.mark.parametrize(
    "query, reason",
    [
        ("state=nope", "unknown job state 'nope'"),
        ("task__regex=(", "task__regex: invalid regular expression: parentheses () not balanced"),
        ("finished_at__year=0", "year 0 is out of range"),
        ("created_at__year=9999", "no such period: year 10000 is out of range"),
        ("created_at__year=0", "no such year: '0'"),
        ("q=a%00b", "q: NUL characters are not allowed"),
        ("id__in=x", "Field 'id' expected a number but got 'x'"),
    ],
)
def test_a_refused_filter_says_why_on_the_list_it_leads_to(admin_client, query, reason):
    """Django redirects to the unfiltered list and drops the reason: it is a message."""
    JobFactory()
    response = admin_client.get(f"{changelist()}?{query}", follow=True)
    assert response.redirect_chain == [(f"{changelist()}?e=1", 302)]
    assert response.status_code == 200
    assert messages_of(response) == [f"Invalid filter or page: {reason}."]


@pytest.mark.parametrize(
    "model, query",
    [("job", "id__range=1"), ("job", "priority__range=5"), ("job", "task__range=a"),
     ("job", "id__range=12"), ("queue", "name__range=a"), ("schedule", "id__range=1"),
     ("workerprocess", "id__range=1"), ("connector", "id__range=1"),
     ("apitoken", "id__range=1")],
)  # fmt: skip
def test_a_range_in_the_url_is_an_invalid_filter_on_every_list(admin_client, model, query):
    """Django filters a range with the URL's text, read one character per bound: one
    character was an IndexError (a 500), "12" the range from 1 to 2."""
    JobFactory()
    QueueFactory(name="default")
    url = reverse(f"admin:pgjobs_{model}_changelist")
    response = admin_client.get(f"{url}?{query}", follow=True)
    assert response.redirect_chain == [(f"{url}?e=1", 302)]
    key = query.partition("=")[0]
    assert messages_of(response) == [
        f"Invalid filter or page: {key}: a range can't be given in the URL; "
        "filter with __gte and __lte instead."
    ]


#: Every relation to a row of ours whose admin has a search box: Django's autocomplete
#: view searches that admin's rows (whether or not a form shows the widget).
AUTOCOMPLETED = [("schedule", "last_job", "job"), ("jobdependency", "job", "job"),
                 ("jobdependency", "depends_on", "job"), ("scheduletick", "job", "job"),
                 ("scheduletick", "schedule", "schedule"),
                 ("connectorslot", "connector", "connector")]  # fmt: skip


@pytest.mark.parametrize("source, field, found", AUTOCOMPLETED)
def test_the_autocomplete_view_finds_nothing_for_a_term_with_a_nul(
    admin_client, source, field, found
):
    """The term reached PostgreSQL (a DataError, a 500): no row holds a NUL."""
    job = JobFactory(task="testproject.demo.tasks.add")
    schedule = Schedule.objects.create(name="add", cron="* * * * *", task=job.task, args=[1, 2])
    connector = ConnectorFactory(name="add")
    query = {"app_label": "pgjobs", "model_name": source, "field_name": field}
    for term in ("\x00", "add\x00", "\x00add"):
        response = admin_client.get("/admin/autocomplete/", {**query, "term": term})
        assert response.status_code == 200
        assert response.json()["results"] == []
    response = admin_client.get("/admin/autocomplete/", {**query, "term": "add"})
    row = {"job": job, "schedule": schedule, "connector": connector}[found]
    assert [result["id"] for result in response.json()["results"]] == [str(row.pk)]


def test_a_page_past_the_end_says_so(admin_client, monkeypatch):
    from django_pgjobs.admin import jobs as job_admin

    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    JobFactory.create_batch(3)
    response = admin_client.get(changelist(), {"state": "available", "p": "9"}, follow=True)
    assert messages_of(response) == ["Invalid filter or page: no such page."]


@pytest.mark.parametrize("page", ["3", "9", "99999999999999999999"])
def test_a_page_past_the_end_under_a_filter_no_index_serves_says_so(
    admin_client, monkeypatch, page
):
    """Nothing is counted there; a page past the end was shown, empty, with a count
    of the jobs before it ("about 4,999,999,999,999,999,999,950 jobs")."""
    from django_pgjobs.admin import jobs as job_admin

    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    JobFactory.create_batch(3)
    query = {"task": "testproject.demo.tasks.add", "p": page}
    response = admin_client.get(changelist(), query, follow=True)
    assert response.redirect_chain == [(f"{changelist()}?e=1", 302)]
    # Refused by Django's paginator (the count puts the page past the end) or by ours.
    assert messages_of(response)[0] in (
        "Invalid filter or page: no such page.",
        f"Invalid filter or page: page {page} is past the end of the list.",
    )


def test_the_last_page_under_such_a_filter_is_shown(admin_client, monkeypatch):
    from django_pgjobs.admin import jobs as job_admin

    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    jobs = JobFactory.create_batch(3)
    response = admin_client.get(changelist(), {"task": "testproject.demo.tasks.add", "p": "2"})
    assert shown(response) == [jobs[0].pk] and response.context["cl"].result_count == 3


def test_a_valid_regex_filters(admin_client):
    mail = JobFactory(task="app.mail.send")
    JobFactory()
    response = admin_client.get(changelist(), {"task__regex": r"^app\.(mail|sms)\."})
    assert response.status_code == 200 and shown(response) == [mail.pk]


@pytest.mark.parametrize("model", ["queue", "schedule", "workerprocess", "connector", "apitoken"])
def test_every_pgjobs_list_refuses_a_regex_postgresql_cant_compile(admin_client, model):
    response = admin_client.get(f"{changelist(model)}?pk__regex=(", follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "Invalid filter or page: pk__regex: invalid regular expression: "
        "parentheses () not balanced."
    ]


@pytest.mark.parametrize("filters", ["task__regex=(", "created_at__year=9999", "state=nope"])
def test_retry_discarded_under_a_refused_filter_retries_nothing(admin_client, filters):
    job = JobFactory(discarded=True)
    response = admin_client.post(
        "/admin/pgjobs/job/retry-discarded/", {"filters": filters}, follow=True
    )
    assert response.status_code == 200
    assert Job.objects.get(pk=job.pk).state == "discarded"
    assert messages_of(response)[-1] == "Nothing retried."


# -- rows written by SQL ------------------------------------------------------------------

#: Markup that must arrive escaped wherever a row's value is shown.
MARKUP = "<script>pwned()</script>"


def odd_row(**columns: str) -> int:
    """A job row written by SQL (``columns``: SQL expressions), past every Python check."""
    return insert_job(**columns)


def json_of(value: object) -> str:
    """``value`` as a SQL literal of JSON."""
    return "'" + json.dumps(value).replace("'", "''") + "'"


FINISHED = {"finished_at": "now()"}
#: Rows no code of ours writes, each within the database's CHECKs.
# fmt: off
ODD_ROWS: dict[str, dict[str, str]] = {
    "task of markup": {"task": f"'{MARKUP}'"},
    "task of 255 characters": {"task": "'" + "a." * 127 + "b'"},
    "task empty": {"task": "''"},
    "task of bidi and zero-width characters": {"task": "'\u202e\u200b\u200d.x\u2066'"},
    "queue of markup": {"queue": f"'{MARKUP[:60]}'"},
    "queue with a newline": {"queue": "E'a\\nb'"},
    "queue empty": {"queue": "''"},
    "queue of path characters": {"queue": "'../x/%2F?#'"},
    "queue of a space": {"queue": "' '"},
    "args of markup": {"args": json_of([MARKUP, {MARKUP: MARKUP}])},
    "kwargs of markup": {"kwargs": json_of({MARKUP: MARKUP})},
    "args a number": {"args": "'5'"},
    "kwargs a string": {"kwargs": json_of(MARKUP)},
    "args with an escaped NUL": {"args": """'["a\\\\u0000b"]'"""},
    "args of 200,000 characters": {"args": json_of(["y" * 200_000])},
    "args nested 3,000 deep": {"args": "'" + "[" * 3000 + "]" * 3000 + "'"},
    "kwargs nested 3,000 deep": {"kwargs": "'" + '{"a":' * 3000 + "1" + "}" * 3000 + "'"},
    "meta of markup, snoozed": {
        "state": "'scheduled'",
        "run_at": "now() + interval '1 hour'",
        "meta": json_of({"pipeline": MARKUP, "snoozed": dict.fromkeys(
            ("count", "until", "at", "reason"), MARKUP)}),
    },
    "meta snoozed a list": {"meta": json_of({"snoozed": [1, 2]})},
    "meta a number, completed": {"state": "'completed'", **FINISHED, "meta": "'5'"},
    "meta null, completed": {"state": "'completed'", **FINISHED, "meta": "'null'"},
    "meta a string of markup, completed": {
        "state": "'completed'", **FINISHED, "meta": json_of(MARKUP),
    },
    "meta snoozed at the ends of time": {
        "meta": json_of({"snoozed": {"count": 1e300, "at": "0001-01-01T00:00:00-12:00",
                                     "until": "9999-12-31T23:59:59+14:00"}}),
    },
    "errors of markup": {
        "state": "'discarded'", **FINISHED,
        "errors": json_of([dict.fromkeys(("attempt", "at", "error", "traceback"), MARKUP)]),
    },
    "errors not records": {
        "state": "'discarded'", **FINISHED, "errors": json_of([MARKUP, 3, None, [1], {"error": 5}]),
    },
    "errors ending in a string": {"state": "'retryable'", "errors": json_of([{}, MARKUP])},
    "an error that is an object": {
        "state": "'retryable'", "errors": json_of([{"error": {"a": MARKUP}}]),
    },
    "errors an object": {"state": "'discarded'", **FINISHED, "errors": json_of({"error": MARKUP})},
    "errors a string": {"state": "'discarded'", **FINISHED, "errors": json_of(MARKUP)},
    "errors null": {"errors": "'null'"},
    "an error of blank lines": {
        "state": "'discarded'", **FINISHED, "errors": json_of([{"error": "\n\n   \n"}]),
    },
    "errors at odd times": {
        "state": "'discarded'", **FINISHED,
        "errors": json_of([{"error": "e", "at": at} for at in (
            "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999", "0001-01-01T00:00:00+14:00",
            5, "2024-02-30", MARKUP)]),
    },
    "failed attempts at times past the ends once in UTC": {
        "state": "'discarded'", **FINISHED, "attempt": "3",
        "errors": json_of([{"attempt": n, "error": "e", "at": at} for n, at in enumerate((
            "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2024-02-30T00:00:00"),
            start=1)]),
    },
    "cancelled while it ran, attempt numbers of every JSON type": {
        "state": "'cancelled'", **FINISHED, "attempt": "2", "attempted_at": "now()",
        "errors": json_of([{"attempt": n, "error": "e"} for n in ([1], {"a": 1}, "1", None)]),
    },
    "result of markup": {"state": "'completed'", **FINISHED, "result": json_of({MARKUP: MARKUP})},
    "result nested 3,000 deep": {
        "state": "'completed'", **FINISHED, "result": "'" + "[" * 3000 + "]" * 3000 + "'",
    },
    "result SQL NULL": {"state": "'completed'", **FINISHED, "result": "NULL"},
    "times at the first day": {
        "run_at": "'0001-01-02 00:00:00+00'", "created_at": "'0001-01-02 00:00:00+00'",
    },
    "times at the last day, finished before it started": {
        "state": "'completed'", "run_at": "'9999-12-30 23:59:59+00'",
        "created_at": "'9999-12-30 23:59:59+00'", "attempted_at": "'9999-12-30 23:59:59+00'",
        "finished_at": "'0001-01-02 00:00:00+00'",
    },
    "completed, never finished": {"state": "'completed'"},
    "executing, never started, held by no worker": {
        "state": "'executing'", "lease": "gen_random_uuid()", "worker_id": "424242",
    },
    "executing, started in 9999": {
        "state": "'executing'", "lease": "gen_random_uuid()", "attempt": "5",
        "attempted_at": "'9999-12-30 00:00:00+00'",
    },
    "executing since year 1": {
        "state": "'executing'", "lease": "gen_random_uuid()",
        "attempted_at": "'0001-01-02 00:00:00+00'",
    },
    "available, due in 9999": {"run_at": "'9999-12-30 00:00:00+00'"},
    "scheduled, due in year 1": {"state": "'scheduled'", "run_at": "'0001-01-02 00:00:00+00'"},
    "retryable, finished": {"state": "'retryable'", **FINISHED, "attempt": "1"},
    "waiting for no dependency": {"state": "'waiting'"},
    "priority lowest": {"priority": "-32768"},
    "priority highest": {"priority": "32767"},
    "attempts at their largest": {
        "state": "'retryable'", "attempt": "2147483647", "max_attempts": "2147483647",
    },
    "waiting for 2,147,483,647 dependencies": {
        "state": "'waiting'", "pending_dependencies": "2147483647",
    },
    "timeout of 1e-300 s": {"timeout": "1e-300"},
    "unique key and connector of markup": {
        "unique_key": f"'{MARKUP}'", "connector": f"'{MARKUP}'",
    },
}
# fmt: on

#: Every view of the job list: each tab, filter, search and drill-down.
LIST_QUERIES = [
    "", *(f"state={state}" for state in JobState.values), "snoozed=waiting", "snoozed=ever",
    "q=script", "q=pwned()", f"task={quote(MARKUP)}", f"queue={quote(MARKUP[:60])}", "queue=a%0Ab",
    "queue=", "created_at__year=1", "created_at__year=1&created_at__month=1",
    "created_at__year=9999&created_at__month=12&created_at__day=30", "all=", "p=2", "o=-1",
    # Django's own rows (rows.py leaves popups to it), and its facets.
    "_popup=1", "_popup=1&_to_field=id", "_facets=1",
]  # fmt: skip


@pytest.fixture
def odd_rows() -> dict[str, int]:
    rows = {name: odd_row(**columns) for name, columns in ODD_ROWS.items()}
    worker = WorkerProcessFactory(host=MARKUP, queues=[MARKUP, "default"])
    rows["held by a worker"] = odd_row(
        task=f"'{MARKUP}'", state="'executing'", lease="gen_random_uuid()",
        attempted_at="now()", worker_id=str(worker.pk),
    )  # fmt: skip
    QueueFactory(name="default")
    return rows


def unescaped(response) -> str | None:
    """The markup around the first unescaped ``MARKUP`` in the page, if any."""
    body = response.content.decode(errors="replace")
    at = body.find(MARKUP)
    return None if at < 0 else body[max(0, at - 200) : at + 50]


@pytest.mark.parametrize("query", LIST_QUERIES)
def test_every_view_of_the_list_shows_odd_rows_escaped(admin_client, odd_rows, query):
    response = admin_client.get(f"{changelist()}?{query}")
    assert response.status_code == 200, response.status_code
    assert unescaped(response) is None, unescaped(response)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_rows_at_the_ends_of_time_show_in_any_time_zone(admin_client, odd_rows, settings, zone):
    settings.TIME_ZONE = zone
    for query in ("", "state=completed", "state=executing", "created_at__year=1"):
        assert admin_client.get(f"{changelist()}?{query}").status_code == 200, query
    for name in ("times at the first day", "times at the last day, finished before it started"):
        assert admin_client.get(detail_url(odd_rows[name])).status_code == 200, name


def detail_url(pk: int) -> str:
    return reverse("admin:pgjobs_job_change", args=[pk])


@pytest.mark.parametrize("name", ODD_ROWS)
def test_every_odd_row_has_a_page_that_shows_it_escaped(admin_client, odd_rows, name):
    pk = odd_rows[name]
    for url in (detail_url(pk), reverse("admin:pgjobs_job_history", args=[pk])):
        response = admin_client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert unescaped(response) is None, unescaped(response)
    deleting = admin_client.get(reverse("admin:pgjobs_job_delete", args=[pk]))
    executing = ODD_ROWS[name].get("state") == "'executing'"
    assert deleting.status_code == (403 if executing else 200)  # cancel first


@pytest.mark.parametrize(
    "url",
    ["/admin/pgjobs/job/dashboard/", "/admin/pgjobs/queue/", "/admin/pgjobs/queue/default/change/",
     "/admin/pgjobs/workerprocess/", "worker page", "/admin/pgjobs/schedule/", "/admin/pgjobs/",
     "/admin/"],
)  # fmt: skip
def test_the_other_pages_show_odd_rows_escaped(admin_client, odd_rows, url):
    if url == "worker page":  # it lists the jobs the worker holds
        url = reverse("admin:pgjobs_workerprocess_change", args=[WorkerProcess.objects.get().pk])
    response = admin_client.get(url)
    assert response.status_code == 200, response.status_code
    assert unescaped(response) is None, unescaped(response)


DASHBOARD = "/admin/pgjobs/job/dashboard/"


def queue_page(name: str) -> str:
    return reverse("admin:pgjobs_queue_change", args=[admin_quote(name)])


def test_the_dashboard_lists_every_queue_jobs_name(admin_client, odd_rows):
    """A queue jobs name but no URL can (an empty name) is listed without a link:
    reverse() raised NoReverseMatch, a 500 on the page and on its data."""
    response = admin_client.get(DASHBOARD + "data/")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    queues = {queue["name"]: queue["url"] for queue in response.json()["queues"]}
    assert queues[""] is None
    for name in ("default", "a\nb", MARKUP[:60], "../x/%2F?#", " "):
        assert queues[name] == queue_page(name), name
    page = admin_client.get(DASHBOARD).content.decode()
    assert "<tr><td></td>" in page  # the empty name, no link


@pytest.mark.parametrize("name", ["x_3A", "a_5Fb", "a:b", "low.er-case_9"])
def test_queue_links_lead_to_their_queue(admin_client, name):
    """Django's admin unquotes a change page's id (``_3A`` is ``:``): the dashboard
    and the job page linked queue ``x_3A`` to a queue ``x:``, which doesn't exist."""
    QueueFactory(name=name)
    job = JobFactory(queue=name)
    url = next(q["url"] for q in admin_client.get(DASHBOARD + "data/").json()["queues"]
               if q["name"] == name)  # fmt: skip
    assert f'href="{url}"' in admin_client.get(detail_url(job.pk)).content.decode()
    page = admin_client.get(url)
    assert page.status_code == 200 and page.context["original"].name == name


def browsed(href: str) -> str:
    """The path a browser asks for when it follows ``href``: it resolves dot-segments
    ("/./", "/../") first, which the test client doesn't."""
    return urlsplit(urljoin("http://testserver/", html.unescape(href))).path


def hrefs(response, pattern: str) -> list[str]:
    return re.findall(rf'(?:href|formaction)="({pattern})"', response.content.decode())


@pytest.mark.parametrize("name", [".", ".."])
def test_a_queue_named_as_a_dot_segment_opens_from_every_link(admin_client, name):
    """The name rule allows "." and "..": their links ended in "/./change/" and
    "/../change/", which a browser resolves to another page (a queue "change", the app's
    index) before it asks."""
    QueueFactory(name=name)
    job = JobFactory(queue=name)

    def opens(href: str) -> bool:
        page = admin_client.get(browsed(href))
        return page.status_code == 200 and page.context["original"].name == name

    listed = admin_client.get(reverse("admin:pgjobs_queue_changelist"))
    [row] = [h for h in hrefs(listed, r"/admin/pgjobs/queue/[^\"]*/change/") if opens(h)]
    linked = next(q["url"] for q in admin_client.get(DASHBOARD + "data/").json()["queues"]
                  if q["name"] == name)  # fmt: skip
    assert opens(linked) and browsed(linked) == browsed(row)
    assert f'href="{linked}"' in admin_client.get(detail_url(job.pk)).content.decode()
    page = admin_client.get(browsed(row))
    [history] = hrefs(page, r"[^\"]*/history/")
    [delete] = hrefs(page, r"[^\"]*/delete/")
    for href in (history, delete):  # and back to the queue from each
        opened = admin_client.get(browsed(href))
        assert opened.status_code == 200 and opened.context["object"].name == name, href
        assert [h for h in hrefs(opened, r"/admin/pgjobs/queue/[^\"]*/change/") if opens(h)]
    saved = admin_client.post(browsed(row), {**edited(page), "_continue": "1"})
    assert saved.status_code == 302 and browsed(saved["Location"]) == browsed(row)
    paused_at = browsed(row).removesuffix("change/") + "pause/"  # its own button's
    [pause] = [h for h in hrefs(listed, r"[^\"]*/pause/") if browsed(h) == paused_at]
    assert admin_client.post(browsed(pause)).status_code == 302
    assert Queue.objects.get(name=name).paused


@pytest.mark.parametrize("name", [".", ".."])
def test_a_queue_named_as_a_dot_segment_added_in_the_admin_opens_on(admin_client, name):
    add = reverse("admin:pgjobs_queue_add")
    added = admin_client.post(add, {**edited(admin_client.get(add)), "name": name,
                                    "_continue": "1"})  # fmt: skip
    assert added.status_code == 302, added.context["adminform"].form.errors
    page = admin_client.get(browsed(added["Location"]))
    assert page.status_code == 200 and page.context["original"].name == name


@pytest.mark.parametrize("name", [".", ".."])
def test_a_dot_segment_queue_is_linked_right_by_save_messages_and_recent_actions(
    admin_client, name
):
    """Django's own links to a queue went through ``quote`` alone, which leaves dots:
    the message after adding it and the admin index's "Recent actions" linked to
    "/./change/", which a browser resolves to another page."""
    add = reverse("admin:pgjobs_queue_add")
    added = admin_client.post(add, {**edited(admin_client.get(add)), "name": name}, follow=True)
    [message] = messages_of(added)
    [href] = re.findall(r'href="([^"]*)"', message)
    page = admin_client.get(browsed(href))
    assert page.status_code == 200 and page.context["original"].name == name
    changed = admin_client.post(browsed(href), {**edited(page), "priority": 3}, follow=True)
    [message] = messages_of(changed)
    assert [browsed(h) for h in re.findall(r'href="([^"]*)"', message)] == [browsed(href)]
    index = admin_client.get(reverse("admin:index"))
    recent = hrefs(index, r"[^\"]*/pgjobs/queue/[^\"]*/change/")
    assert len(recent) == 2 and {browsed(h) for h in recent} == {browsed(href)}


@pytest.mark.parametrize("name", ["default", "."])
def test_a_queue_page_s_delete_link_is_in_the_django_version_s_own_markup(admin_client, name):
    """Its submit row was ours, for a "." queue's delete link, in Django 6's markup
    (``role="button"``) on Django 5.2 too."""
    QueueFactory(name=name)
    page = admin_client.get(reverse("admin:pgjobs_queue_change", args=[name])).content.decode()
    [link] = re.findall(r'<a [^>]*class="deletelink"[^>]*>', page)
    assert ('role="button"' in link) == (django.VERSION >= (6, 0))
    [href] = re.findall(r'href="([^"]*)"', link)
    opened = admin_client.get(browsed(href))
    assert opened.status_code == 200 and opened.context["object"].name == name


def edited(page) -> dict[str, object]:
    """The change form's fields as the page fills them in."""
    form = page.context["adminform"].form
    return {field.name: field.value() for field in form if field.value() is not None}


# -- actions on such rows ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["retry_jobs", "cancel_jobs", "delete_jobs"])
def test_bulk_actions_on_every_odd_row_answer_cleanly(admin_client, odd_rows, name):
    data = {"action": name, "index": "0", "_selected_action": list(odd_rows.values()),
            "confirmed": "yes", "completed_by": timezone.now().isoformat()}  # fmt: skip
    response = admin_client.post(changelist(), data)
    assert response.status_code == 302, response.status_code
    assert admin_client.get(changelist()).status_code == 200


def test_the_bulk_retry_s_question_over_every_odd_row_answers_cleanly(admin_client, odd_rows):
    """Completed ones among them: the question first, which shows counts, not rows."""
    data = {"action": "retry_jobs", "index": "0", "_selected_action": list(odd_rows.values())}
    asked = admin_client.post(changelist(), data)
    assert asked.status_code == 200 and b"Run completed jobs again?" in asked.content
    assert unescaped(asked) is None
    assert Job.objects.filter(pk__in=odd_rows.values(), state="completed").exists()


@pytest.mark.parametrize("name", ODD_ROWS)
def test_retry_and_cancel_of_each_odd_row_answer_cleanly(admin_client, odd_rows, name):
    pk = odd_rows[name]
    asked = admin_client.post(reverse("admin:pgjobs_job_retry", args=[pk]))
    if asked.status_code == 200:  # a completed job runs again only once confirmed
        assert "again?" in asked.content.decode() and unescaped(asked) is None
    for view in ("pgjobs_job_retry", "pgjobs_job_cancel"):
        yes = {"confirmed": "yes", "completed_by": timezone.now().isoformat()}
        response = admin_client.post(reverse(f"admin:{view}", args=[pk]), yes)
        assert response.status_code == 302, (view, response.status_code)
    assert admin_client.get(detail_url(pk)).status_code == 200


def test_retry_all_discarded_under_a_filter_retries_odd_rows_too(admin_client, odd_rows):
    response = admin_client.post("/admin/pgjobs/job/retry-discarded/", {"filters": "q=pwned"})
    assert response.status_code == 302
    assert not Job.objects.filter(state="discarded", pk__in=odd_rows.values(),
                                  task__contains="pwned").exists()  # fmt: skip


def test_a_job_at_the_attempt_counters_limit_is_not_retried(admin_client):
    """Its retry made ``attempt + 1`` overflow: a 500, and the bulk retry of every job
    selected with it failed. Made available, its claim would fail every claim of its
    queue (integer out of range): it stays as it is, and says why."""
    odd = odd_row(state="'discarded'", attempt="2147483647", max_attempts="2147483647",
                  finished_at="now()")  # fmt: skip
    plain = JobFactory(discarded=True)
    response = admin_client.post(reverse("admin:pgjobs_job_retry", args=[odd]), follow=True)
    assert messages_of(response) == [
        f"Job #{odd} can't be retried now: it has had 2,147,483,647 attempts, the most its "
        "counter holds."
    ]
    data = {"action": "retry_jobs", "index": "0", "_selected_action": [odd, plain.pk]}
    assert admin_client.post(changelist(), data).status_code == 302
    states = dict(Job.objects.values_list("pk", "state"))
    assert states == {odd: "discarded", plain.pk: "available"}


def test_a_job_whose_dependency_edges_point_nowhere_has_a_page(admin_client):
    """Edges to and from jobs that don't exist: their foreign keys are triggers,
    which a replica session skips (a restore of part of a dump). The pages show what
    exists. (Finishing such a job works once the edges are committed: PostgreSQL
    checks no key an update leaves as it is, except on a row written in the same
    transaction, as here. A job waiting for a job that doesn't exist is cancelled by
    the prune routine: tests/test_hostile_rows.py.)"""
    waiting = odd_row(state="'waiting'", pending_dependencies="1")
    sql("SET session_replication_role = replica")
    sql("INSERT INTO pgjobs_jobdependency (job_id, depends_on_id, satisfied)"
        " VALUES (%s, 987654321, false), (987654322, %s, false)", [waiting, waiting])  # fmt: skip
    sql("SET session_replication_role = origin")
    page = admin_client.get(detail_url(waiting))
    assert page.status_code == 200 and "987654321" not in page.content.decode()
    assert admin_client.get(f"{changelist()}?state=waiting").status_code == 200


def test_jobs_created_at_the_ends_of_time_dont_fill_the_drill_down(admin_client):
    """It offers the years from the first job to the last by id: a row written in
    year 9999 (or year 1) added 8,000 links to every page of the list (450 KB)."""
    first = odd_row(created_at="'0001-01-02 00:00:00+00'")
    JobFactory()
    last = odd_row(created_at="'9999-12-30 00:00:00+00'")
    response = admin_client.get(changelist())
    assert response.status_code == 200 and len(response.content) < 100_000
    years = [int(y) for y in re.findall(r"created_at__year=(\d+)", response.content.decode())]
    this_year = timezone.localtime().year
    assert max(years) == this_year and len(set(years)) == 100
    assert shown(response) == [last, *shown(response)[1:-1], first]


# -- the API token form -----------------------------------------------------------------

#: What the token form's fields may not hold, and the form error each gets: a
#: connector of spaces or of 101 characters was saved, a name no connector has. (A
#: NUL is refused by the JSON field itself, before the names are read.)
REFUSED_TOKEN_FIELDS = {
    "a connector with a NUL": ({"connectors": '["hook\\u0000"]'}, "NUL characters"),
    "a connector of spaces": ({"connectors": '["a b"]'}, "'a b' is not a name (nor '*')"),
    "a connector of 101 characters": ({"connectors": json.dumps(["c" * 101])}, "'ccc"),
    "a connector that is a number": ({"connectors": "[5]"}, "5 is not a name"),
    "connectors as a string": ({"connectors": '"hook"'}, "a list of connector names"),
    "connectors as an object": ({"connectors": '{"hook": 1}'}, "a list of connector names"),
    "a queue with a NUL": ({"queues": '["mail\\u0000"]'}, "NUL characters"),
    "a queue of spaces": ({"queues": '["a b"]'}, "'a b' is not a name (nor '*')"),
    "a queue of spaces, typed": ({"queues": "a b, mail"}, "'a b' is not a name (nor '*')"),
    "a queue with a NUL, typed": ({"queues": "mail\x00"}, "NUL characters"),
    "queues as a number": ({"queues": "5"}, "a list of queue names"),
    "a name with a NUL": ({"name": "c\x00i"}, "Null characters are not allowed"),
}


@pytest.mark.parametrize("case", REFUSED_TOKEN_FIELDS)
def test_the_token_form_refuses_names_no_token_holds_and_writes_nothing(admin_client, case):
    fields, shown = REFUSED_TOKEN_FIELDS[case]
    form = {"name": "ci", "queues": '["*"]', "connectors": "[]", "active": "on", **fields}
    response = admin_client.post(reverse("admin:pgjobs_apitoken_add"), form)
    assert response.status_code == 200  # the form again, with its errors
    errors = response.context["adminform"].form.errors
    field = next(iter(fields))
    assert list(errors) == [field] and shown in " ".join(errors[field])
    assert not ApiToken.objects.exists()


def test_the_token_form_warns_of_a_queue_or_connector_that_does_not_exist(admin_client):
    """A typo (mial) made a token every request for 'mail' was refused with, and the
    admin said nothing, where issue_api_token warns. The token is made all the same
    (a queue may be created later); the page that shows it says what no queue has."""
    ConnectorFactory(name="slack")
    QueueFactory(name="late")
    form = {"name": "ci", "queues": "mial, late, default", "connectors": "slakc, slack"}
    response = admin_client.post(reverse("admin:pgjobs_apitoken_add"), {**form, "active": "on"})
    assert response.status_code == 200 and "Copy it now" in response.text
    token = ApiToken.objects.get(name="ci")
    assert token.queues == ["mial", "late", "default"]
    said = messages_of(response)
    assert said == [
        "no queue is called 'mial' (did you mean 'mail'?); the token names it all the same, "
        "and a request for it is refused until it exists",
        "no connector is called 'slakc' (did you mean 'slack'?); the token names it all the "
        "same, and a request for it is refused until it exists",
    ]
    assert html.escape(said[0][1:]) in response.text  # shown as "No queue ..."
    change = reverse("admin:pgjobs_apitoken_change", args=[token.pk])
    edited = {**form, "queues": "*", "connectors": "hooks", "active": "on"}
    response = admin_client.post(change, edited, follow=True)
    assert messages_of(response)[0].startswith("no connector is called 'hooks' (yet);")
    response = admin_client.post(change, {**edited, "connectors": ""}, follow=True)
    assert not [m for m in messages_of(response) if "is called" in m]
