"""Hostile input at the entry points, cases test_hostile_more left out: a job id in
text read one way everywhere.

Each case is refused where it comes in with the documented error, before any
query or request is made.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from django_pgjobs import limits
from django_pgjobs.api.tokens import issue
from django_pgjobs.compat import TaskResultDoesNotExist, task_backends
from django_pgjobs.selection import InvalidSelection, parse_id
from tests.admin_helpers import changelist
from tests.django_tasks_for_tests import add as django_add

# -- a job id in text ------------------------------------------------------------------------

#: Text int() reads as a number that is no job id as the id rule says it (str(id)
#: exactly): "{}" is a real job's id.
NOT_IDS = [
    " {} ", "{} ", "\t{}", "{}\n", "+{}", "-{}", "0{}", "1_000", "{}_0", "\u0661", "\uff11",
    "{}.0", "0", "-1", "", str(limits.MAX_ID + 1), "9" * 20, "9" * 5000, "0x1", "1e3",
]  # fmt: skip


@pytest.fixture
def job_id(db) -> str:
    return str(django_add.enqueue(1, 2).id)


def test_one_rule_reads_a_job_id_in_text():
    assert limits.id_in_text("1") == 1
    assert limits.id_in_text(str(limits.MAX_ID)) == limits.MAX_ID
    for text in NOT_IDS:
        assert limits.id_in_text(text.format(1)) is None, text
    assert limits.id_in_text(1) is None  # text only: an int is no id *in text*


@pytest.mark.parametrize("text", NOT_IDS)
def test_the_django_tasks_backend_reads_no_other_id(job_id, text):
    with pytest.raises(TaskResultDoesNotExist, match="is not a pgjobs job id"):
        task_backends["default"].get_result(text.format(job_id))


@pytest.mark.parametrize("text", NOT_IDS)
def test_the_api_reads_no_other_id_in_a_path(client, job_id, text):
    bearer = {"Authorization": "Bearer " + issue("ci", ["*"])[1]}
    assert client.get(f"/jobs/{job_id}", headers=bearer).status_code == 200
    path = quote(text.format(job_id), safe="")
    response = client.get(f"/jobs/{path}", headers=bearer)
    # "" is the enqueue endpoint, which takes no GET
    assert response.status_code == (405 if path == "" else 404), text


@pytest.mark.parametrize("text", NOT_IDS)
def test_the_operators_selection_reads_no_other_id(job_id, text):
    assert parse_id(job_id) == parse_id(f"#{job_id}") == int(job_id)
    with pytest.raises(InvalidSelection, match="not a job id"):
        parse_id(text.format(job_id))
    with pytest.raises(InvalidSelection, match="not a job id"):
        parse_id("#" + text.format(job_id))


@pytest.mark.parametrize("term", ["9" * 5000, "#" + "9" * 5000])
def test_the_admins_search_by_id_reads_ids_by_the_same_rule(admin_client, job_id, term):
    """int() raised on 5,000 digits: the job list answered 500."""
    found = admin_client.get(changelist(), {"q": f"#{job_id}"})
    assert found.context["cl"].result_count == 1
    assert admin_client.get(changelist(), {"q": term}).status_code == 200


def test_a_cancel_notice_for_no_job_id_is_ignored(worker):
    """The listener read its target with int(): 5,000 digits raised in it."""
    for target in ["9" * 5000, "01", "-1", "\u0661"]:
        worker._on_notify("pgjobs_control", f"cancel:{target}")
