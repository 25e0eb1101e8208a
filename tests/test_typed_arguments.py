"""Typed task arguments: enqueue checks them against the task's type hints and stores
JSON; the worker passes the typed values back in; the API, the schedules and the admin
use the same check; odd input is refused naming the argument, with nothing written."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from django_pgjobs import Job, task
from django_pgjobs.api.openapi import OPENAPI
from django_pgjobs.api.tokens import issue
from django_pgjobs.exceptions import PayloadError
from django_pgjobs.models import Schedule, ScheduleTick
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.typed import InvalidArguments, Signature, UnsupportedType
from tests.factories import ScheduleFactory
from tests.tasks_for_typed import (
    Colour,
    Line,
    Node,
    Order,
    counted,
    invoice,
    later,
    place,
    tree,
    unique_invoice,
)

pytestmark = pytest.mark.django_db

REF = uuid.UUID("12345678-1234-5678-1234-567812345678")
INVOICE = "tests.tasks_for_typed.invoice"


def run(worker, job: Job) -> Job:
    worker.drain()
    job.refresh_from_db()
    assert job.state == "completed", job.errors
    return job


# -- enqueue stores JSON, the worker passes typed values back ---------------------------------


def test_typed_values_are_stored_as_json_and_come_back_typed(worker):
    job = invoice.enqueue(
        date(2026, 1, 31), Decimal("12.50"), REF, [Line("A-1", 2, Decimal("1.10"))],
        colour=Colour.BLUE, due=datetime(2026, 2, 1, 9, 30, tzinfo=timezone(timedelta(hours=1))),
        every=timedelta(days=1, microseconds=5), at=time(9, 30), tags=frozenset({"b", "a"}),
        pair=(1, "x"), address={"street": "Main St"}, mode="final",
        extra={"fee": Decimal("0.99")},
    )  # fmt: skip
    job.refresh_from_db()
    assert job.args == ["2026-01-31", "12.50", str(REF),
                        [{"sku": "A-1", "quantity": 2, "price": "1.10"}]]  # fmt: skip
    assert job.kwargs == {
        "colour": "blue", "due": "2026-02-01T09:30:00+01:00", "every": "P1DT00H00M00.000005S",
        "at": "09:30:00", "tags": ["a", "b"], "pair": [1, "x"],
        "address": {"street": "Main St"}, "mode": "final", "extra": {"fee": "0.99"},
    }  # fmt: skip
    result = dict(run(worker, job).result[1])
    assert result["when"] == ["date", "2026-01-31"]
    assert result["total"] == ["Decimal", "12.50"]
    assert result["ref"] == ["UUID", str(REF)]
    assert result["lines"] == [
        "list",
        [["Line", "Line(sku='A-1', quantity=2, price=Decimal('1.10'))"]],
    ]
    assert result["colour"] == ["Colour", "blue"]
    assert result["due"] == ["datetime", "2026-02-01 09:30:00+01:00"]
    assert result["every"] == ["timedelta", "1 day, 0:00:00.000005"]
    assert result["at"] == ["time", "09:30:00"]
    assert result["tags"] == ["frozenset", [["str", "a"], ["str", "b"]]] or result["tags"] == [
        "frozenset", [["str", "b"], ["str", "a"]]]  # fmt: skip
    assert result["pair"] == ["tuple", [["int", "1"], ["str", "x"]]]
    assert result["address"] == ["dict", {"street": ["str", "Main St"]}]
    assert result["extra"] == ["dict", {"fee": ["Decimal", "0.99"]}]


def test_json_forms_are_accepted_and_stored_the_same(worker):
    typed = invoice.enqueue(date(2026, 1, 31), Decimal("12.5"), REF, [])
    text = Job.enqueue(INVOICE, args=["2026-01-31", "12.5", str(REF).upper(), []])
    number = Job.enqueue(INVOICE, args=["2026-01-31", 12.5, f"{{{REF}}}", []])
    stored = {tuple(json.dumps(job.args) for job in (typed, text, number))}
    assert len({job.args[0] for job in (typed, text, number)}) == 1
    assert [job.args[1] for job in (typed, text, number)] == ["12.5", "12.5", "12.5"]
    assert len({job.args[2] for job in (typed, text, number)}) == 1, stored
    for job in (typed, text, number):
        assert run(worker, job).result[1]["total"] == ["Decimal", "12.5"]


def test_a_pydantic_model_is_validated_and_passed_in(worker):
    order = Order(id=7, amount=Decimal("3.30"), placed=datetime(2026, 1, 1, tzinfo=UTC),
                  lines=[Line("B", 1)])  # fmt: skip
    job = place.enqueue(order)
    assert job.args == [{"id": 7, "amount": "3.30", "placed": "2026-01-01T00:00:00Z",
                         "lines": [{"sku": "B", "quantity": 1, "price": "0"}]}]  # fmt: skip
    result = run(worker, job).result[1]
    assert result["amount"] == ["Decimal", "3.30"]
    with pytest.raises(InvalidArguments, match=r"args\[0\] \(parameter 'order'\): Order.amount"):
        place.enqueue({"id": 7, "amount": "lots", "placed": "2026-01-01T00:00:00Z"})


def test_positional_only_variadic_and_keyword_parameters_bind_as_python_does(worker):
    job = counted.enqueue(3, 1, 2.5, scale=2, unit="kg")
    result = run(worker, job).result[1]
    assert result == {
        "n": ["int", "3"],
        "rest": ["tuple", [["int", "1"], ["float", "2.5"]]],
        "scale": ["int", "2"],
        "labels": ["dict", {"unit": ["str", "kg"]}],
    }
    with pytest.raises(InvalidArguments, match="'n' is positional-only"):
        Job.enqueue("tests.tasks_for_typed.counted", kwargs={"n": 3})
    with pytest.raises(InvalidArguments, match=r"kwargs\['unit'\]: expected a string, got int"):
        counted.enqueue(3, unit=5)


def test_a_recursive_dataclass_and_a_hint_defined_after_its_task(worker):
    job = tree.enqueue(Node("a", [Node("b"), Node("c", [Node("d")])]))
    assert run(worker, job).result == 4
    assert run(worker, later.enqueue({"name": "x"})).result == "Later"


def test_a_unique_typed_task_keys_the_values_as_stored_by_parameter_defaults_too():
    """Its key is of the arguments as stored (the typed values' JSON), bound to the
    parameters with the defaults applied, each default as its type stores it."""
    first = unique_invoice.enqueue(date(2026, 1, 1))
    for again in [
        unique_invoice.enqueue("2026-01-01"),
        unique_invoice.enqueue(when=date(2026, 1, 1), colour=Colour.RED),
        unique_invoice.enqueue(date(2026, 1, 1), "red", total=Decimal("0")),
        unique_invoice.enqueue(total="0", when="2026-01-01"),
    ]:
        assert (again.pk, again.is_duplicate) == (first.pk, True), (again.args, again.kwargs)
    others = [
        unique_invoice.enqueue(date(2026, 1, 2)),
        unique_invoice.enqueue(date(2026, 1, 1), Colour.BLUE),
        unique_invoice.enqueue(date(2026, 1, 1), total=Decimal("0.00")),  # stored as "0.00"
    ]
    assert len({first.pk, *(other.pk for other in others)}) == 4
    with pytest.raises(InvalidArguments, match="'when' is given in args as well"):
        unique_invoice.enqueue(date(2026, 1, 1), when=date(2026, 1, 1))


def test_plain_tasks_are_not_checked_as_before():
    job = Job.enqueue("testproject.demo.tasks.add", args=["not", "numbers"])
    assert job.args == ["not", "numbers"]


# -- refused, naming the argument, with nothing written ----------------------------------------

GOOD = [date(2026, 1, 31), Decimal("1"), REF, []]
NUL, SURROGATE = "\x00", "\ud800"


def nested(levels: int) -> dict:
    node: dict = {"name": "leaf"}
    for _ in range(levels):
        node = {"name": "n", "children": [node]}
    return node


REFUSED = [
    (["2026-13-01", *GOOD[1:]], {}, r"args\[0\] \(parameter 'when'\): expected a date"),
    ([datetime(2026, 1, 1), *GOOD[1:]], {}, "expected a date"),
    (["0000-01-01", *GOOD[1:]], {}, "expected a date"),
    (["2026-01-31" + NUL, *GOOD[1:]], {}, "expected a date"),
    (["2026-01-3" + SURROGATE, *GOOD[1:]], {}, "expected a date"),
    ([GOOD[0], Decimal("NaN"), *GOOD[2:]], {}, "expected a finite decimal"),
    ([GOOD[0], "Infinity", *GOOD[2:]], {}, "expected a finite decimal"),
    ([GOOD[0], "-sNaN", *GOOD[2:]], {}, "expected a finite decimal"),
    ([GOOD[0], math.nan, *GOOD[2:]], {}, "expected a decimal"),
    ([GOOD[0], math.inf, *GOOD[2:]], {}, "expected a decimal"),
    ([GOOD[0], "1e9999999", *GOOD[2:]], {}, "a decimal from 1E-999999 to 1E"),
    ([GOOD[0], True, *GOOD[2:]], {}, "expected a decimal"),
    ([*GOOD[:2], "not-a-uuid", []], {}, r"args\[2\] \(parameter 'ref'\): expected a UUID"),
    (
        [*GOOD[:3], [{"sku": "A", "quantity": "2"}]],
        {},
        r"args\[3\]\[0\]\.quantity \(parameter 'lines'\): expected an integer, got str '2'",
    ),
    ([*GOOD[:3], [{"sku": "A", "quantity": True}]], {}, "expected an integer, got bool"),
    ([*GOOD[:3], [{"sku": "A", "quantity": 1, "colour": "red"}]], {}, "unknown field 'colour'"),
    ([*GOOD[:3], [{"sku": "A"}]], {}, "missing field 'quantity' of Line"),
    ([*GOOD[:3], {"sku": "A"}], {}, "expected a list of"),
    (GOOD, {"colour": "green"}, r"kwargs\['colour'\]: expected one of 'red', 'blue'"),
    (GOOD, {"due": "2026-01-01T00:00:00+24:00"}, "expected a datetime"),
    (GOOD, {"due": "10000-01-01T00:00:00"}, "expected a datetime"),
    (GOOD, {"every": 1e20}, "expected a duration"),
    (GOOD, {"every": math.nan}, "expected a duration"),
    (GOOD, {"every": "P999999999999D"}, "expected a duration"),
    (GOOD, {"mode": "Final"}, "expected one of 'draft', 'final'"),
    (GOOD, {"pair": [1, "x", 2]}, "expected a list of 2"),
    (GOOD, {"extra": {"fee": "x"}}, r"kwargs\['extra'\]\['fee'\]: expected a decimal"),
    (GOOD, {"address": {"street": 5}}, r"kwargs\['address'\]\.street: expected a string"),
    (GOOD, {"nope": 1}, "invoice\\(\\) has no parameter 'nope'"),
    (GOOD, {"when": GOOD[0]}, "'when' is given in args as well"),
    (GOOD[:3], {}, "missing argument 'lines'"),
    ([*GOOD, 5], {}, "takes at most 4 positional argument"),
    ({"not": "a list"}, {}, "args must be a list"),
]


@pytest.mark.parametrize("args, kwargs, message", REFUSED, ids=[m[:40] for _, _, m in REFUSED])
def test_arguments_that_do_not_fit_are_refused_naming_them_and_nothing_is_written(
    args, kwargs, message
):
    with transaction.atomic():
        with pytest.raises(PayloadError, match=message) as refused:
            Job.enqueue(INVOICE, args=args, kwargs=kwargs)
        assert isinstance(refused.value, TypeError)  # as every argument error of enqueue
        assert Job.objects.count() == 0  # and the caller's transaction is usable
    with pytest.raises(PayloadError, match=message):
        Job.enqueue_many([{"task": INVOICE, "args": GOOD}] * 150
                         + [{"task": INVOICE, "args": args, "kwargs": kwargs}])  # fmt: skip
    assert Job.objects.count() == 0


def test_text_no_table_can_hold_and_too_deep_nesting_are_refused_too():
    with pytest.raises(PayloadError, match="NUL"):
        invoice.enqueue(*GOOD[:3], [Line("A" + NUL, 1)])
    with pytest.raises(PayloadError, match="lone surrogate"):
        invoice.enqueue(*GOOD, address={"street": SURROGATE})
    with pytest.raises(InvalidArguments, match="nested more than 100 levels deep"):
        tree.enqueue(nested(120))
    with pytest.raises(InvalidArguments, match="keyword names must be strings"):
        Job.enqueue(INVOICE, args=GOOD, kwargs={5: 1})
    with pytest.raises(PayloadError, match="4300 digits"):
        counted.enqueue(10**5000)
    with pytest.raises(InvalidArguments, match="expected a finite number"):
        counted.enqueue(1, math.inf)

    class Broken(tzinfo):
        def utcoffset(self, moment: datetime | None) -> timedelta:
            raise RuntimeError("no offset here")

    with pytest.raises(InvalidArguments, match=r"kwargs\['due'\]: its time zone can't say"):
        invoice.enqueue(*GOOD, due=datetime(2026, 1, 1, tzinfo=Broken()))
    assert Job.objects.count() == 0


def test_a_type_no_json_can_hold_fails_the_decorator_naming_the_parameter():
    def takes_bytes(data: bytes) -> None: ...

    with pytest.raises(UnsupportedType, match="data: bytes can't be stored as JSON"):
        task(name="tests.typed.bytes", typed=True)(takes_bytes)

    def int_keys(prices: dict[int, str]) -> None: ...

    with pytest.raises(TypeError, match=r"prices: .*string keys only"):
        task(name="tests.typed.int_keys", typed=True)(int_keys)


# -- a row that no longer fits ------------------------------------------------------------------


def test_a_stored_row_that_does_not_fit_fails_its_attempt_saying_why(worker):
    job = invoice.enqueue(*GOOD)
    with connection.cursor() as cursor:  # written around enqueue, or the signature changed
        cursor.execute("UPDATE pgjobs_job SET args = '[\"yesterday\", 1, 2, 3]' WHERE id = %s",
                       [job.pk])  # fmt: skip
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.attempt) == ("retryable", 1)  # newer code may take it
    assert "args[0] (parameter 'when'): expected a date" in job.errors[-1]["error"]


# -- schedules, the admin and the API use the same check ------------------------------------


def test_a_schedule_of_a_typed_task_is_checked_and_its_ticks_pass_typed_values(worker):
    schedule = ScheduleFactory.build(task=INVOICE, args=["2026-13-01", "1", str(REF), []])
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert "args[0] (parameter 'when'): expected a date" in refused.value.message_dict["args"][0]
    schedule = ScheduleFactory(task=INVOICE, args=["2026-01-31", 1, str(REF), []],
                               kwargs={"mode": "final"}, cron="0 * * * *")  # fmt: skip
    schedule.full_clean()
    Scheduler(routines=[]).run_once(datetime(2026, 6, 1, 10, 30, tzinfo=UTC))
    Scheduler(routines=[]).run_once(datetime(2026, 6, 1, 11, tzinfo=UTC))
    job = Job.objects.get(pk=ScheduleTick.objects.get().job_id)
    assert job.args == ["2026-01-31", "1", str(REF), []]
    assert run(worker, job).result[1]["when"] == ["date", "2026-01-31"]


def test_the_admin_schedule_form_shows_the_typed_error_on_its_field(admin_client):
    response = admin_client.post(
        reverse("admin:pgjobs_schedule_add"),
        {"name": "typed", "cron": "* * * * *", "timezone": "UTC", "task": INVOICE,
         "args": '["2026-01-31", "1", "x", []]', "kwargs": '{"colour": "green"}',
         "queue": "", "priority": "", "enabled": "on", "jitter": "0", "overlap": "allow",
         "catch_up": "latest", "catch_up_window": "", "catch_up_limit": "100"},
    )  # fmt: skip
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "expected a UUID" in str(errors["args"])
    assert not Schedule.objects.exists()


def test_the_schedule_page_lists_a_typed_tasks_parameters(admin_client):
    schedule = ScheduleFactory(task=INVOICE, args=["2026-01-31", 1, str(REF), []])
    page = admin_client.get(reverse("admin:pgjobs_schedule_change", args=[schedule.pk]))
    assert "when: a date" in page.content.decode()


@pytest.fixture
def token() -> str:
    return issue("typed", ["*"])[1]


def post_job(client, token: str, body: Any):
    return client.post("/jobs", json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def test_the_api_refuses_what_does_not_fit_naming_the_argument(client, token):
    body = {"task": INVOICE, "args": ["2026-01-31", "1", str(REF), [{"sku": "A", "quantity": "x"}]]}
    response = post_job(client, token, body)
    assert response.status_code == 400
    assert response.json()["fields"] == {
        "args[3][0].quantity": "args[3][0].quantity (parameter 'lines'): expected an integer, "
        "got str 'x'"
    }
    assert not Job.objects.exists()
    body["args"][3][0]["quantity"] = 2
    created = post_job(client, token, body)
    assert created.status_code == 201
    assert created.json()["args"][3] == [{"sku": "A", "quantity": 2, "price": "0"}]


ODD_BODIES = [
    f'["\\u0000", "1", "{REF}", []]',
    f'["2026-01-31\\u0000", "1", "{REF}", []]',
    f'["\\ud800", "1", "{REF}", []]',
    f'["2026-01-31", 1e309, "{REF}", []]',
    f'["2026-01-31", -1e309, "{REF}", []]',
    f'["2026-01-31", "NaN", "{REF}", []]',
    f'["2026-01-31", "1e99999999", "{REF}", []]',
    f'["2026-01-31", 1, "{REF}", [{{"sku": "a", "quantity": 1e999}}]]',
    '["2026-01-31", 1, "{}", [{{"sku": "a", "quantity": {}}}]]'.format(REF, "9" * 5000),
    f'["9999-12-31T23:59:59-23:59", 1, "{REF}", []]',
    '["2026-01-31", 1, "{}", {}1{}]'.format(REF, "[" * 150, "]" * 150),
]


@pytest.mark.parametrize("args", ODD_BODIES, ids=[body[:30] for body in ODD_BODIES])
def test_the_api_refuses_odd_typed_arguments_and_writes_nothing(client, token, args):
    body = f'{{"task": "{INVOICE}", "args": {args}}}'
    response = client.post("/jobs", body, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert not Job.objects.exists()


def test_the_openapi_description_has_each_typed_tasks_arguments(client, tmp_path):
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    response = client.get("/jobs/openapi.yaml")
    assert response.status_code == 200
    served = tmp_path / "openapi.yaml"
    served.write_bytes(response.content)
    spec, _ = read_from_filename(str(served))
    validate(spec)
    schemas = spec["components"]["schemas"]
    request = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    choices = request["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/task.tests.tasks_for_typed.invoice"} in choices
    typed = schemas["task.tests.tasks_for_typed.invoice"]["allOf"][1]["properties"]
    assert typed["task"] == {"const": INVOICE}
    when, total = typed["args"]["prefixItems"][:2]
    assert when == {"type": "string", "format": "date"}
    assert total == {"type": ["string", "number"], "format": "decimal"}
    line = schemas["tests.tasks_for_typed.Line"]
    assert line["required"] == ["quantity", "sku"] and line["additionalProperties"] is False
    assert "tests.tasks_for_typed.Order" in schemas  # pydantic's own schema
    generic = schemas["EnqueueRequest"]
    assert generic["properties"]["task"]["type"] == "string"
    static, _ = read_from_filename(str(OPENAPI))  # the file alone, without typed tasks
    validate(static)
    assert "task.tests.tasks_for_typed.invoice" not in static["components"]["schemas"]


# -- properties ----------------------------------------------------------------------------------

offsets = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=23, minutes=59)),
]
aware = st.datetimes(timezones=st.sampled_from(offsets))
values = st.fixed_dictionaries({
    "when": st.dates(),
    "total": st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e30"),
                         max_value=Decimal("1e30")),
    "ref": st.uuids(),
    "due": st.one_of(st.none(), aware, st.datetimes()),
    "every": st.timedeltas(),
    "at": st.one_of(st.none(), st.times()),
    "tags": st.frozensets(st.text(st.characters(codec="utf-8", exclude_characters="\x00"))),
})  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(values)
def test_what_is_stored_reads_back_as_the_values_enqueued(value):
    signature = Signature(invoice.func)
    args = [value["when"], value["total"], value["ref"], []]
    kwargs = {key: value[key] for key in ("due", "every", "at", "tags")}
    stored_args, stored_kwargs = signature.dump(args, kwargs)
    text = json.dumps([stored_args, stored_kwargs])
    read_args, read_kwargs = signature.parse(*json.loads(text))
    assert read_args == args and read_kwargs == kwargs
    assert [type(v) for v in read_args] == [type(v) for v in args]
    assert signature.dump(read_args, read_kwargs) == (stored_args, stored_kwargs)  # one form
