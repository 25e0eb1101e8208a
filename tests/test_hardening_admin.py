"""The admin never answers 500 to odd input, and answers 403 when a permission is missing.

A sweep: every page of every pgjobs admin, with odd ids and odd query strings (NUL,
lone surrogates, huge numbers, dates out of range), as a superuser and as staff
who may only view; every action and operator view POSTed by staff who may only
view; the forms with odd values.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_pgjobs.api.tokens import issue
from django_pgjobs.models import ApiToken, Connector, Job, Queue, Schedule, WorkerProcess
from tests.admin_helpers import action, staff_client
from tests.factories import ConnectorFactory, JobFactory, QueueFactory, WorkerProcessFactory

pytestmark = pytest.mark.django_db

MODELS = {
    "job": Job,
    "queue": Queue,
    "schedule": Schedule,
    "workerprocess": WorkerProcess,
    "connector": Connector,
    "apitoken": ApiToken,
}
VIEW_ONLY = [f"view_{name}" for name in MODELS]

NUL = "\x00"
HUGE = "9" * 30
#: Odd values of an id in a URL path.
ODD_IDS = ["0", "-1", HUGE, "abc", "%00", "%ED%A0%80", "%FF", "1%2F..", " "]
#: Odd values of a query string parameter, percent-encoded as a client may send them
#: (%ED%A0%80 is a lone surrogate in the UTF-8 of CESU; %FF is no UTF-8 at all).
ODD_VALUES = [quote(value, safe="") for value in (
    NUL, f"a{NUL}b", HUGE, "-" + HUGE, "0001-01-01", "99999-01-01", "2024-13-45", "1e309",
    "nan", "%", "\\", "'", "[]", "{}", "x" * 5000)] + ["%ED%A0%80", "%FF", "%"]  # fmt: skip


@pytest.fixture
def rows() -> dict[str, object]:
    """One row of each model, so that change pages have something to show."""
    schedule = Schedule.objects.create(
        name="nightly", cron="0 3 * * *", task="testproject.demo.tasks.add", args=[1, 2]
    )
    token, _ = issue("ci", ["*"])
    return {
        "job": JobFactory(),
        "queue": QueueFactory(name="default"),
        "schedule": schedule,
        "workerprocess": WorkerProcessFactory(),
        "connector": ConnectorFactory(name="hook", secrets={"token": "s3cr3t-canary"}),
        "apitoken": token,
    }  # fmt: skip


@pytest.fixture
def viewer() -> Client:
    return staff_client(*VIEW_ONLY, username="viewer")


def pages(model: str, pk: object) -> list[str]:
    prefix = f"/admin/pgjobs/{model}/"
    return [prefix, f"{prefix}add/", f"{prefix}{pk}/change/", f"{prefix}{pk}/history/",
            f"{prefix}{pk}/delete/", f"{prefix}{pk}/"]  # fmt: skip


def where(url: str) -> str:
    """A URL without its values: one failure per page and parameter is enough."""
    path, _, query = url.partition("?")
    return f"{path}?{query.partition('=')[0]}" if query else path


def encoded(value: str) -> str:
    """A form value percent-encoded, but one that is already (e.g. %ED%A0%80) as it is."""
    return value if value.startswith("%") else quote(value, safe="")


class Sweep:
    """Requests many URLs and keeps every one that fails (a 500, or what the test
    client re-raises in its place), so that one run shows them all."""

    def __init__(self) -> None:
        self.failures: dict[str, str] = {}

    def request(self, client: Client, method: str, url: str, data: object = None) -> None:
        try:
            if isinstance(data, dict):  # a form, encoded by hand: some values are bytes
                body = "&".join(f"{quote(k)}={encoded(v)}" for k, v in data.items())
                response = client.post(url, body, content_type="application/x-www-form-urlencoded")
            else:
                send = getattr(client, method)
                response = send(url, data) if data is not None else send(url)
        except Exception as error:
            self.failures.setdefault(f"{where(url)} {type(error).__name__}: {error}"[:200], url)
            return
        if response.status_code >= 500:
            self.failures.setdefault(f"{where(url)} status {response.status_code}", url)

    def check(self) -> None:
        assert not self.failures, "\n".join(
            f"{url[:150]} -> {why}" for why, url in self.failures.items()
        )


@pytest.fixture
def sweep() -> Sweep:
    return Sweep()


@pytest.mark.parametrize("who", ["superuser", "viewer"])
@pytest.mark.parametrize("model", MODELS)
def test_every_page_renders_for_superusers_and_viewers(
    who, model, rows, admin_client, viewer, sweep
):
    client = admin_client if who == "superuser" else viewer
    for url in pages(model, rows[model].pk):
        sweep.request(client, "get", url)
    sweep.check()


@pytest.mark.parametrize("model", MODELS)
def test_odd_ids_in_paths_are_not_500(model, rows, admin_client, sweep):
    for odd in ODD_IDS:
        for url in pages(model, odd):
            sweep.request(admin_client, "get", url)
    sweep.check()


def own_urls(model: str) -> list[str]:
    """The admin's own views that take an id (pause, retry, stop...), as templates."""
    patterns = admin.site._registry[MODELS[model]].get_urls()
    found = [str(p.pattern) for p in patterns if "<" in str(p.pattern)]
    return [re.sub(r"<[^>]+>", "{}", pattern) for pattern in found if "path:" not in pattern]


@pytest.mark.parametrize("model", MODELS)
def test_odd_ids_in_operator_views_and_actions_are_not_500(model, rows, admin_client, sweep):
    for template, odd in itertools.product(own_urls(model), [*ODD_IDS, "%00x"]):
        sweep.request(admin_client, "post", f"/admin/pgjobs/{model}/" + template.format(odd))
    for name, odd in itertools.product(actions_of(model), [NUL, HUGE, "abc", "-1", ""]):
        data = {"action": name, "index": "0", "_selected_action": odd, "confirmed": "yes"}
        sweep.request(admin_client, "post", f"/admin/pgjobs/{model}/", data)
    sweep.check()


def changelist_parameters(model: str) -> list[str]:
    names = ["q", "p", "o", "e", "_changelist_filters", "all"]
    model_admin = admin.site._registry[MODELS[model]]
    for entry in model_admin.list_filter:
        names.append(getattr(entry, "parameter_name", None) or f"{entry}__exact")
    if model_admin.date_hierarchy:
        names += [f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")]
    return names


@pytest.mark.parametrize("model", MODELS)
def test_odd_query_strings_on_changelists_are_not_500(model, rows, admin_client, sweep):
    url = f"/admin/pgjobs/{model}/"
    for name, value in itertools.product(changelist_parameters(model), ODD_VALUES):
        sweep.request(admin_client, "get", f"{url}?{name}={value}")
    sweep.check()


def test_odd_query_strings_on_job_pages_are_not_500(rows, admin_client, sweep):
    for value in ODD_VALUES:
        for url in ("/admin/pgjobs/job/dashboard/", "/admin/pgjobs/job/dashboard/data/"):
            sweep.request(admin_client, "get", f"{url}?window={value}&queue={value}")
    sweep.check()


# -- permissions: 403 when missing --------------------------------------------------------


def actions_of(model: str) -> list[str]:
    model_admin = admin.site._registry[MODELS[model]]
    return [name for name in (model_admin.actions or ()) if isinstance(name, str)]


@pytest.mark.parametrize(
    "model, name", [(model, name) for model in MODELS for name in actions_of(model)]
)
def test_every_action_is_403_for_staff_who_may_only_view(model, name, rows, viewer):
    before = list(MODELS[model].objects.order_by("pk").values())
    response = viewer.post(f"/admin/pgjobs/{model}/", action(name, rows[model]))
    assert response.status_code == 403, (model, name, response.status_code)
    assert list(MODELS[model].objects.order_by("pk").values()) == before


def test_the_connector_and_token_forms_are_403_to_post_for_viewers(rows, viewer):
    hook, token = rows["connector"], rows["apitoken"]
    response = viewer.post(
        f"/admin/pgjobs/connector/{hook.pk}/change/",
        {"name": "hook", "kind": "http", "config": '{"url": "http://evil.example/"}'},
    )
    assert response.status_code == 403
    assert Connector.objects.get().config == hook.config
    response = viewer.post(
        f"/admin/pgjobs/apitoken/{token.pk}/change/", {"name": "x", "active": ""}
    )
    assert response.status_code == 403
    assert ApiToken.objects.get().active


# -- forms: odd values in every field -----------------------------------------------------

#: A valid add form of each model the admin can add, by model.
VALID_FORMS = {
    "queue": {"name": "odd", "priority": "0", "concurrency": "", "max_attempts": "",
              "backoff_strategy": "", "backoff_base": "", "backoff_max": "", "backoff_jitter": ""},
    "schedule": {"name": "odd", "cron": "* * * * *", "timezone": "UTC", "catch_up": "latest",
                 "jitter": "0", "overlap": "allow", "catch_up_window": "", "catch_up_limit": "100",
                 "task": "testproject.demo.tasks.add", "args": "[1, 2]", "kwargs": "{}",
                 "queue": "", "priority": "", "enabled": "on"},
    "connector": {"name": "odd", "kind": "http", "description": "", "concurrency": "",
                  "config": '{"url": "http://127.0.0.1:9/"}', "secrets": ""},
    "apitoken": {"name": "odd", "queues": '["default"]', "connectors": "[]",
                 "can_enqueue": "on", "can_read": "on", "expires_at_0": "", "expires_at_1": ""},
}  # fmt: skip
#: Odd values for any form field: percent-encoded in the body (a lone surrogate can
#: only arrive as the bytes of CESU-8, or escaped in JSON).
ODD_FIELD_VALUES = [NUL, f"a{NUL}b", "%ED%A0%80", "%FF", HUGE, "-" + HUGE, "1e309", "nan", "inf",
                    "x" * 100_000, '"\\u0000"', '["\\u0000"]', '{"\\u0000": 1}', '["\\ud800"]',
                    '{"a": "\\udfff"}', "[" * 5000, "0001-01-01", "9999-12-31",
                    # JSON Python's json can't read: ValueError, not JSONDecodeError.
                    "9" * 5000, '{"url": ' + "9" * 5000 + "}"]  # fmt: skip


@pytest.mark.parametrize("model", VALID_FORMS)
def test_odd_values_in_add_forms_are_refused_not_500(model, admin_client, sweep):
    url = f"/admin/pgjobs/{model}/add/"
    for field, value in itertools.product(VALID_FORMS[model], ODD_FIELD_VALUES):
        if field.startswith("expires_at"):
            continue  # below, as date and time
        sweep.request(admin_client, "post", url, {**VALID_FORMS[model], field: value})
    if model == "apitoken":
        for date, time in [("0001-01-01", "00:00"), ("9999-12-31", "23:59:59"), (HUGE, HUGE)]:
            data = {**VALID_FORMS[model], "expires_at_0": date, "expires_at_1": time}
            sweep.request(admin_client, "post", url, data)
    sweep.check()


def test_a_viewer_sees_a_connectors_secret_names_and_no_box_to_type_secrets_in(rows, viewer):
    page = viewer.get(f"/admin/pgjobs/connector/{rows['connector'].pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "token" in html and "s3cr3t-canary" not in html
    assert 'name="secrets"' not in html and 'name="config"' not in html


# -- forms: a property test -------------------------------------------------------------

#: Any text a browser can send, odd values weighted in (hypothesis shrinks to the
#: smallest failing form).
FIELD_VALUES = st.one_of(
    st.sampled_from(ODD_FIELD_VALUES),
    st.text(max_size=40),
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{1,5})?(e[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["[]", "{}", "[1, 2]", '{"a": 1}', "null", "true", "*/5 * * * *", "UTC"]),
)


@pytest.mark.parametrize("model", VALID_FORMS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.dictionaries(st.sampled_from(sorted(set().union(*VALID_FORMS.values()))),
                               FIELD_VALUES, max_size=4))  # fmt: skip
def test_any_add_form_is_refused_or_saves_a_row_every_page_reads(model, changes, admin_client):
    """For any values: a form with errors and nothing written, or a saved row (a
    redirect; for a token, the page that shows it once) whose pages render."""
    fields = {k: v for k, v in changes.items() if k in VALID_FORMS[model]}
    data = {**VALID_FORMS[model], **fields}
    table = MODELS[model].objects
    before = table.count()
    body = "&".join(f"{quote(k)}={encoded(v)}" for k, v in data.items())
    response = admin_client.post(
        f"/admin/pgjobs/{model}/add/", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code in (200, 302), (response.status_code, data)
    if table.count() == before:  # refused, with the form's errors
        assert response.status_code == 200, data
        return
    row = table.order_by("-pk").first()
    try:
        for url in (f"/admin/pgjobs/{model}/", f"/admin/pgjobs/{model}/{row.pk}/change/"):
            assert admin_client.get(url).status_code == 200, (url, data)
    finally:
        table.filter(pk=row.pk).delete()  # the next example starts from the same rows
