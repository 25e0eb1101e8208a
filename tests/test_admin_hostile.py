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
