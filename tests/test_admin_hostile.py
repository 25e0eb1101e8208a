"""The job list and dashboard against odd rows and odd query strings.

Rows written by SQL past every Python check (but within the database's CHECKs),
and query strings no page of ours links to: each page answers 200 with every value
escaped, or refuses the query string (a redirect to ``?e=1`` that says why, or a
400) without writing anything. Never a 500.
"""

from __future__ import annotations

import pytest

from django_pgjobs.models import Job
from tests.admin_helpers import changelist
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def shown(response) -> list[int]:
    return [job.pk for job in response.context["cl"].result_list]


# -- the search box ---------------------------------------------------------------------


@pytest.mark.parametrize("term", ["²", "¹²", "#²", "①", "٣", "#٣", "1²"])
def test_digits_int_cant_read_are_searched_as_text(admin_client, term):
    """``str.isdigit`` is true of superscripts and circled digits, which ``int()``
    refuses: such a term was a 500 (in the search and again in the list's count)."""
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
    "task__regex=a&task__regex=)",
    # Django's drill-down ends a period at the start of the next: past year 9999.
    "created_at__year=9999", "created_at__year=9999&created_at__month=12",
    "created_at__year=9999&created_at__month=12&created_at__day=31",
]  # fmt: skip


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


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


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


def test_a_page_past_the_end_says_so(admin_client, monkeypatch):
    from django_pgjobs.admin import jobs as job_admin

    monkeypatch.setattr(job_admin.JobAdmin, "list_per_page", 2)
    JobFactory.create_batch(3)
    response = admin_client.get(changelist(), {"state": "available", "p": "9"}, follow=True)
    assert messages_of(response) == ["Invalid filter or page: no such page."]


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
