"""More hostile input: what test_hostile_rows, test_admin_hostile and test_hardening_*
left out. Cron expressions croniter reads but no scheduler could keep, and others.

Each case is refused where it comes in with the documented error, writes nothing and
leaves the caller's transaction usable; rows written by SQL stop nothing else.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from django_pgjobs import InvalidOption, Job, PayloadError, limits, testing
from django_pgjobs.api.tokens import issue
from django_pgjobs.compat import InvalidTask, TaskResultDoesNotExist, task_backends
from django_pgjobs.connectors.errors import ConnectorError, ConnectorMisconfigured
from django_pgjobs.connectors.store import get_connector
from django_pgjobs.cron import InvalidCron, UnknownTimezone, timing
from django_pgjobs.exceptions import InvalidQueueName
from django_pgjobs.models import Connector, Schedule
from django_pgjobs.pipelines import enqueue_pipeline
from testproject.demo.tasks import add as add_task
from tests.admin_helpers import action, messages_of
from tests.django_tasks_for_tests import add as django_add
from tests.factories import ConnectorFactory, stored_as_before
from tests.test_hardening_rows import sql

ADD = "testproject.demo.tasks.add"


@pytest.fixture
def bearer(db) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue("ci", ["*"], can_run=True, connectors=["*"])[1]}


def refused_writing_nothing(client, bearer, body: str) -> dict:
    """POST /jobs in the caller's transaction: its answer's JSON, once checked that it
    is a 400 that wrote nothing and that the transaction goes on."""
    with transaction.atomic():
        response = client.post("/jobs", body, content_type="application/json", headers=bearer)
        assert response.status_code == 400, response.content
        assert not Job.objects.exists()
    return response.json()


# -- cron -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["R * * * *", "r * * * *", "0 R * * *", "R(0-30)/5 * * * *", "0 0 * * R", "R * * * * *"],
)
def test_a_random_field_is_refused_as_no_two_readers_would_agree_on_it(expression):
    """croniter reads "R" as a time drawn afresh on each reading: next_fire_at would
    never be a tick of the expression as read again, so the schedule fired at random
    or not at all."""
    with pytest.raises(InvalidCron, match="'R' \\(random\\) fields are not supported"):
        timing(expression)


@pytest.mark.parametrize(
    "expression", ["@every \u0661\u0660s", "@every \uff15m", "@every \U0001d7d3m"]
)
def test_an_interval_in_digits_other_than_ascii_is_refused(expression):
    """Python's \\d and int() read any script's digits; cron is written in 0-9."""
    with pytest.raises(InvalidCron, match="invalid interval"):
        timing(expression)


def test_sunday_as_7_to_0_is_sunday_not_the_whole_week():
    """7 and 0 are both Sunday: "7-0" was read as wrapping round the week, every day."""
    after = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    assert timing("0 0 * * 7-0").next_after(after) == datetime(2026, 1, 4, tzinfo=UTC)


def test_the_machines_own_zone_is_refused_as_schedulers_on_other_hosts_read_it_apart(db):
    """zoneinfo lists "localtime" (the machine's /etc/localtime): a schedule in it fired
    at the local time of whichever host's scheduler planned it."""
    with pytest.raises(UnknownTimezone, match="'localtime' is the zone each machine is set to"):
        timing("0 9 * * *", "localtime")
    with pytest.raises(ValidationError) as refused:
        Schedule(name="local", cron="0 9 * * *", timezone="localtime", task=ADD).full_clean()
    assert "timezone" in refused.value.message_dict


@pytest.mark.parametrize("zone", [["UTC"], {"UTC": 1}, None, 5])
def test_a_timezone_that_is_no_string_is_unknown_not_a_type_error(zone):
    """The check for "localtime" came before the one for a string: a list or a dict
    raised TypeError (unhashable) where every other name says UnknownTimezone."""
    with pytest.raises(UnknownTimezone, match="unknown timezone"):
        timing("0 9 * * *", zone)


# -- POST /jobs bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, key",
    [
        ('{"task": "nowhere.task", "task": "$ADD", "args": [1, 2]}', "'task'"),
        ('{"task": "$ADD", "queue": "a", "queue": "default", "args": [1, 2]}', "'queue'"),
        ('{"task": "$ADD", "args": [1, 2], "kwargs": {"to": "a", "to": "b"}}', "'to'"),
        ('{"task": "$ADD", "args": [{"x": [{"y": 1, "y": 2}]}, 2]}', "'y'"),
    ],
)
def test_a_key_twice_in_one_object_is_refused_not_read_as_the_last(client, bearer, body, key):
    """json.loads keeps the last of two equal keys: a proxy or log that reads the first
    saw another task, queue or argument than the one enqueued."""
    answer = refused_writing_nothing(client, bearer, body.replace("$ADD", ADD))
    assert answer["fields"] == {
        "body": f"not valid JSON: the key {key} appears twice in one object"
    }


@pytest.mark.parametrize("number", ["9" * 4301, "-" + "9" * 5000])
def test_a_number_of_more_digits_than_python_reads_is_refused_in_the_apis_words(
    client, bearer, number
):
    """int()'s refusal went to the client as it was: "... use
    sys.set_int_max_str_digits() to increase the limit"."""
    answer = refused_writing_nothing(client, bearer, f'{{"task": "{ADD}", "args": [{number}, 1]}}')
    assert answer["fields"] == {"body": "not valid JSON: a number has more than 4300 digits"}
    refused_writing_nothing(client, bearer, f'{{"task": "{ADD}", "priority": {number}}}')


def test_a_number_past_this_interpreters_own_digit_limit_is_refused_in_the_apis_words(
    client, bearer
):
    """The limit is the interpreter's (sys.set_int_max_str_digits), not a copy of its
    default: under a lower one, int()'s advice reached the client again."""
    import sys

    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(1000)
    try:
        body = f'{{"task": "{ADD}", "args": [{"9" * 2000}, 1]}}'
        answer = refused_writing_nothing(client, bearer, body)
    finally:
        sys.set_int_max_str_digits(before)
    assert answer["fields"] == {"body": "not valid JSON: a number has more than 1000 digits"}


# -- connectors ---------------------------------------------------------------------------

CANARY = "Cnry-3a7c"
CALL = "django_pgjobs.connectors.tasks.call"


@pytest.mark.parametrize(
    "kind, config, field",
    [
        ("http", {"url": [f"https://user:{CANARY}@hooks.example.com/x"]}, "config.url"),
        (
            "http",
            {"url": "https://hooks.example.com/x", "username": {"pw": CANARY}},
            "config.username",
        ),
        ("command", {"executable": "true", "args": [{"password": CANARY}]}, "config.args"),
        ("smtp", {"host": f"mail.example.com:{CANARY}".split(":"), "port": 25}, "config.host"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_named_by_its_type_not_shown(
    worker, admin_client, kind, config, field
):
    """A value of the wrong type was shown in full ("must be str, not ['https://user:..."):
    in the job's error, which the API shows to every token of the queue, and the admin's."""
    connector = ConnectorFactory(name="odd", kind=kind)
    sql(
        "UPDATE pgjobs_connector SET config = %s::jsonb WHERE id = %s",
        [json.dumps(config), connector.pk],
    )
    with pytest.raises(ConnectorMisconfigured) as raised:
        get_connector("odd")
    assert field in raised.value.fields and CANARY not in str(raised.value)
    job = Job.enqueue(CALL, connector="odd")
    worker.drain()
    job.refresh_from_db()
    assert field in job.errors[0]["error"] and CANARY not in json.dumps(job.errors)
    answer = admin_client.post(
        "/admin/pgjobs/connector/", action("test_connection", connector), follow=True
    )
    shown = messages_of(answer)
    assert shown and field.partition(".")[2] in shown[0] and CANARY not in " ".join(shown)
    form = Connector(name="typed", kind=kind, config=config)
    with pytest.raises(ValidationError) as refused:
        form.full_clean()
    assert CANARY not in str(refused.value.message_dict)


@pytest.mark.parametrize("kwargs", [{"connector": "hook"}, {"connector": {"url": "http://x"}}])
def test_the_call_task_given_a_connector_in_its_kwargs_is_discarded_saying_how(
    worker, http_peer, kwargs
):
    """kwargs {"connector": "hook"} replace the stored connector the worker passes: call()
    raised AttributeError ("'str' object has no attribute 'call'"), retried to the end."""
    ConnectorFactory(name="hook", config={"url": http_peer.url})
    job = Job.enqueue(CALL, kwargs={"payload": {"a": 1}, **kwargs}, connector="hook")
    assert worker.drain() == {"discarded": 1}
    job.refresh_from_db()
    assert "not in its kwargs" in job.errors[-1]["error"] and not http_peer.received


@pytest.mark.parametrize(
    "kind, config",
    [
        ("http", {"url": "https://hooks.example.com/x", "timeout": 1e300}),
        ("smtp", {"host": "mail.example.com", "timeout": 1e300}),
        ("command", {"executable": "true", "timeout": 1e300}),
        ("command", {"executable": "true", "kill_grace": 10**30}),
    ],
)
def test_a_wait_no_socket_or_process_can_take_is_refused_on_save(db, kind, config):
    """A timeout of 1e300 passed "greater than 0", then every job of the connector and
    every admin test failed with OverflowError (retried, saying nothing of the config)."""
    key = next(key for key in config if key in ("timeout", "kill_grace"))
    with pytest.raises(ValidationError) as refused:
        Connector(name="slow", kind=kind, config=config).full_clean()
    assert any(
        message.startswith(f"{key}: must be a number of seconds above 0 and at most")
        for message in refused.value.message_dict["config"]
    ), refused.value


def test_a_stored_wait_too_long_fails_its_job_as_misconfigured(worker):
    connector = ConnectorFactory(name="slow")
    sql(
        "UPDATE pgjobs_connector SET config = config || '{\"timeout\": 1e400}' WHERE id = %s",
        [connector.pk],
    )
    job = Job.enqueue(CALL, connector="slow")
    worker.drain()
    job.refresh_from_db()
    assert job.errors[0]["error"].startswith(
        "ConnectorMisconfigured: connector 'slow' is misconfigured: config.timeout"
    )


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"headers": {"X-Tag": "a\r\nX-Injected: 1"}}, "the value of 'X-Tag' must be Latin-1"),
        ({"headers": {"X-Tag": "a\x01b"}}, "the value of 'X-Tag' must be Latin-1"),
        ({"headers": {"X-Tag": "\u20ac"}}, "the value of 'X-Tag' must be Latin-1"),
        ({"headers": {"Bad Name": "x"}}, "'Bad Name' is not a header name"),
        ({"headers": {"X-A:b": "x"}}, "'X-A:b' is not a header name"),
        ({"api_key_header": "X-Key\n"}, "'X-Key\\n' is not a header name"),
        ({"headers": {"Content-Length": "5"}}, "'Content-Length' frames the request"),
        ({"headers": {"transfer-encoding": "chunked"}}, "'transfer-encoding' frames the"),
        ({"api_key_header": "Content-Length"}, "'Content-Length' frames the request"),
        ({"api_key_header": "Host"}, "'Host' names the server"),
    ],
)
def test_a_header_no_request_can_carry_is_refused_on_save(db, http_peer, config, problem):
    """http.client refuses them when sending: the connector was saved, and every job of
    it failed (retried), echoing the header's value into its error."""
    config = {"url": http_peer.url, **config}
    with pytest.raises(ValidationError) as refused:
        Connector(name="hook", kind="http", config=config).full_clean()
    assert any(problem in message for message in refused.value.message_dict["config"]), (
        refused.value
    )
    assert not http_peer.received


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding"])
def test_a_framing_header_a_task_passes_is_refused_and_nothing_sent(db, http_peer, name):
    """Content-Length: 5 cut a payload to its first 5 bytes, and the call succeeded;
    a larger one held it to its timeout; Transfer-Encoding sent a body the server
    read as empty."""
    ConnectorFactory(name="hook", config={"url": http_peer.url})
    with pytest.raises(InvalidOption, match=f"'{name}' frames the request"):
        get_connector("hook").call({"a": "bcdefgh"}, headers={name: "5"})
    assert not http_peer.received


def test_headers_a_request_can_carry_are_sent(worker, http_peer):
    headers = {"X-Tag": "caf\u00e9\tok", "x.y_z~1": "a b"}
    ConnectorFactory(
        name="hook",
        config={"url": http_peer.url, "headers": headers, "api_key_header": "X-K"},
        secrets={"api_key": "k"},
    )
    Job.enqueue(CALL, connector="hook")
    assert worker.drain() == {"completed": 1}
    sent = {name.lower(): value for name, value in http_peer.received[0].headers.items()}
    assert (sent["x-tag"], sent["x.y_z~1"], sent["x-k"]) == (headers["X-Tag"], "a b", "k")


# -- the Django Tasks backend -------------------------------------------------------------


@pytest.mark.parametrize(
    "result_id", [" {} ", "{}\n", "0{}", "\uff11", "+{}", True, 1.5, 2**63, "9" * 5000, "0", "-1"]
)
def test_get_result_reads_only_an_id_as_result_id_gives_it(db, result_id):
    """int() read " 1 ", "01", "+1", fullwidth digits and 1.5 as job 1: an id that is
    none read another job's result (and a 5,000-digit one was shown whole)."""
    backend = task_backends["default"]
    job = django_add.enqueue(1, 2)
    assert backend.get_result(job.id).id == job.id
    odd = result_id.format(job.id) if isinstance(result_id, str) else result_id
    with pytest.raises(TaskResultDoesNotExist, match="is not a pgjobs job id") as refused:
        backend.get_result(odd)
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("errors", '{"a": 1}'),
        ("errors", '"text"'),
        ("errors", "null"),
        ("errors", "5"),
        ("errors", '[1, "x", null, [2], {"exception_class": [1], "traceback": {"t": 1}}]'),
        ("args", '{"a": 1}'),
        ("args", "7"),
        ("kwargs", "[1, 2]"),
        ("kwargs", '"text"'),
    ],
)
def test_get_result_of_a_row_of_odd_json_is_a_result(db, column, value):
    """A row written by SQL with errors that are no list of objects, args no array or
    kwargs no object: get_result raised AttributeError or TypeError."""
    job = django_add.enqueue(1, 2)
    sql(f"UPDATE pgjobs_job SET {column} = %s::jsonb WHERE id = %s",
        [value, int(job.id)])  # fmt: skip
    result = task_backends["default"].get_result(job.id)
    assert result.id == job.id
    assert all(isinstance(error.traceback, str) for error in result.errors)
    assert all(isinstance(error.exception_class_path, str) for error in result.errors)
    assert isinstance(result.args, list) and isinstance(result.kwargs, dict)


@pytest.mark.parametrize("attempt", [limits.MAX_ATTEMPTS + 1, 2**31 - 2])
def test_a_result_of_a_row_counting_more_attempts_than_a_job_can_have_is_bounded(worker, attempt):
    """A TaskResult holds one worker id per attempt: a row written by SQL with an
    attempt counter of 2**31 - 2 (the CHECK allows it) built a list of two billion
    strings, 16 GB, in get_result and in the worker that ran its last attempt (to
    send task_finished). Attempts past any job's max_attempts count as that many."""
    from django_pgjobs.compat import task_finished

    finished = []
    task_finished.connect(lambda sender, task_result, **kw: finished.append(task_result),
                          weak=False, dispatch_uid="bounded")  # fmt: skip
    try:
        job = django_add.enqueue(1, 2)
        sql("UPDATE pgjobs_job SET attempt = %s, max_attempts = 2147483647 WHERE id = %s",
            [attempt, int(job.id)])  # fmt: skip
        assert task_backends["default"].get_result(job.id).attempts == limits.MAX_ATTEMPTS
        assert worker.drain() == {"completed": 1}
    finally:
        task_finished.disconnect(dispatch_uid="bounded")
    [result] = finished
    assert result.return_value == 3 and result.attempts == limits.MAX_ATTEMPTS


@pytest.mark.parametrize(
    "run_after",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
    ],
)
def test_a_run_after_no_job_can_hold_is_an_invalid_task_where_it_is_set(db, run_after):
    """Django checks only that run_after is aware: year 1 and 9999 got through using()
    and failed at enqueue with pgjobs' InvalidOption, not the InvalidTask Django's
    callers catch."""
    with pytest.raises(InvalidTask, match=r"run_after .* is out of range"):
        django_add.using(run_after=run_after)
    assert not Job.objects.exists()


def test_an_answer_nested_too_deep_to_read_is_kept_as_text_and_not_sent_again(worker, http_peer):
    """A 200 whose JSON nests 5,000 deep raised RecursionError while call() read it: the
    request had succeeded, yet the job failed and was retried, posting it again."""
    ConnectorFactory(name="hook", config={"url": http_peer.url})
    http_peer.answer = b"[" * 5000 + b"]" * 5000
    job = Job.enqueue(CALL, args=[{"event": "paid"}], connector="hook")
    assert worker.drain() == {"completed": 1}
    job.refresh_from_db()
    assert job.result == {"status": 200, "body": http_peer.answer.decode()}
    assert len(http_peer.received) == 1


# -- the testing kit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "criteria, error",
    [
        ({"args": ["\x00"]}, PayloadError),
        ({"args": [math.nan]}, PayloadError),
        ({"kwargs": {"\ud800": 1}}, PayloadError),
        ({"args": "12"}, PayloadError),
        ({"kwargs": [("a", 1)]}, PayloadError),
        ({"queue": "a\x00b"}, InvalidQueueName),
        ({"queue": 5}, InvalidQueueName),
        ({"priority": True}, InvalidOption),
        ({"priority": 2**70}, InvalidOption),
    ],
)
def test_the_testing_kit_refuses_criteria_no_job_can_hold(db, criteria, error):
    """A NUL or NaN reached PostgreSQL as a DataError, aborting the test's transaction;
    args="12" matched jobs of args ["1", "2"]; True matched priority 1."""
    Job.enqueue(ADD, args=[1, 2])
    with transaction.atomic():
        for check in (testing.enqueued_jobs, testing.assert_not_enqueued):
            with pytest.raises(error):
                check(ADD, **criteria)
        assert testing.assert_enqueued(ADD, args=[1, 2])


#: Testing-kit calls that matched nothing, failed deep down or said something false.
KIT_REFUSALS = {
    # Read as its letters, or a state that is none: no job matched, whatever was enqueued.
    "states a string": (lambda: testing.enqueued_jobs(ADD, states="available"), InvalidOption,
                        "states must be a list of job states, not 'available'"),
    "states naming no state": (lambda: testing.enqueued_jobs(ADD, states=["finished"]),
                               InvalidOption, "states 'finished' is not a job state: use "),
    "states a number": (lambda: testing.enqueued_jobs(ADD, states=5), InvalidOption,
                        "states must be a list of job states, not 5"),
    # A DataError and a UnicodeEncodeError from the lookup.
    "a task name with a NUL": (lambda: testing.enqueued_jobs("a\x00"), InvalidOption,
                               "task contains a NUL character"),
    "a task name with a surrogate": (lambda: testing.assert_not_enqueued("\ud800"),
                                     InvalidOption, "task contains a lone surrogate"),
    # Its repr() raised ValueError in the message.
    "a task of 5,000 digits": (lambda: testing.enqueued_jobs(10**5000), TypeError,
                               "expected a task or its dotted path, not <a int too large"),
    # "expected 1 job(s) of ... found 1", and -1 asserted nothing that could hold.
    "count a string": (lambda: testing.assert_enqueued(ADD, count="1"), InvalidOption,
                       "count must be a whole number, not '1'"),
    "count negative": (lambda: testing.assert_enqueued(ADD, count=-1), InvalidOption,
                       "count must be between 0 and"),
    # AttributeError: 'str' object has no attribute 'utcoffset'.
    "freeze_time of text": (lambda: testing.freeze_time("2020").__enter__(), ValueError,
                            "freeze_time needs a timezone-aware datetime, not '2020'"),
}  # fmt: skip


@pytest.mark.parametrize("case", KIT_REFUSALS)
def test_the_testing_kit_refuses_what_no_job_or_clock_can_be_and_keeps_the_transaction(db, case):
    call, error, message = KIT_REFUSALS[case]
    job = Job.enqueue(ADD, args=[1, 2])
    with transaction.atomic():
        with pytest.raises(error, match=re.escape(message)):
            call()
        assert testing.assert_enqueued(ADD, args=[1, 2], count=1) == [job]


def test_a_path_goes_into_the_urls_path_not_after_its_query_string(db, http_peer):
    """_url appended the path to the whole URL: "/hook?sig=S" + "orders/7" was sent as
    "/hook?sig=S/orders/7", into the query string."""
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url})
    stored_as_before(hook, {"url": http_peer.url + "?sig=S#top"})  # refused when saved now
    get_connector("hook").request(path="orders/7", query={"page": 2})
    assert http_peer.received[-1].path == "/hook/orders/7?sig=S&page=2"


@pytest.mark.parametrize("path", ["a\nb", "a b", "\x00"])
def test_a_path_no_url_can_carry_fails_without_showing_the_query_string(db, http_peer, path):
    """http.client's InvalidURL escaped request() and its message showed the path with
    the configured query string, which error messages leave out (it may carry a key)."""
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url})
    stored_as_before(hook, {"url": http_peer.url + f"?sig={CANARY}"})  # refused when saved now
    with pytest.raises(ConnectorError, match="the path or query holds a space") as refused:
        get_connector("hook").request(path=path)
    assert CANARY not in str(refused.value) and not http_peer.received


@pytest.mark.parametrize("suffix", ["/a b", "?q=a b", "/\x7f", "/caf\u00e9", "?q=\u00e9"])
def test_a_url_no_request_can_carry_is_refused_when_saved_not_at_every_call(db, suffix):
    """A space, a control character or a letter that is not ASCII in the url's path or
    query (of the option or the url secret) was saved, and every call of the connector
    failed, retried ("ordinal not in range(128)"). The secret's value is not shown."""
    url = f"http://127.0.0.1:9/hook{suffix}"
    with pytest.raises(ValidationError, match="quote them") as refused:
        Connector(name="hook", kind="http", config={"url": url}).full_clean()
    assert "url" in refused.value.message_dict["config"][0]
    secret = Connector(name="hook", kind="http", config={})
    with pytest.raises(ValidationError, match="quote them") as refused:
        secret.set_secrets({"url": url})
    assert suffix not in str(refused.value)


def test_a_path_a_task_passes_that_is_not_ascii_fails_saying_so(db, http_peer):
    hook = ConnectorFactory(name="hook", config={"url": http_peer.url})
    with pytest.raises(ConnectorError, match="not ASCII; quote it") as refused:
        get_connector("hook").request(path="caf\u00e9", query={"sig": CANARY})
    assert CANARY not in str(refused.value) and not http_peer.received
    stored_as_before(hook, {"url": http_peer.url + "/caf\u00e9"})  # refused when saved now
    with pytest.raises(ConnectorMisconfigured, match="quote them"):
        get_connector("hook").request()


@pytest.mark.parametrize("name", ["A=B", "=", ""])
def test_an_environment_name_no_process_can_be_given_is_refused_on_save(db, name):
    """Popen raises ValueError for a name with "=" (every job of the connector failed,
    retried) and passes an empty one on as nothing."""
    config = {"executable": "true", "env": {name: "x", "LANG": "C"}}
    with pytest.raises(ValidationError) as refused:
        Connector(name="tool", kind="command", config=config).full_clean()
    assert (
        f"env: {name!r} is not an environment variable name" in refused.value.message_dict["config"]
    )


def mail_job_errors(worker, saved: dict, stored: dict) -> list[dict]:
    """The errors of one mail job through an smtp connector saved with ``saved`` and
    then given ``stored`` by SQL, past the model's checks."""
    connector = ConnectorFactory(name="mail", kind="smtp", config=saved)
    sql(
        "UPDATE pgjobs_connector SET config = %s::jsonb WHERE id = %s",
        [json.dumps(stored), connector.pk],
    )
    job = Job.enqueue(
        CALL, args=[{"subject": "s", "body": "b", "to": "a@example.com"}], connector="mail"
    )
    worker.drain()
    job.refresh_from_db()
    return job.errors


@pytest.mark.parametrize(
    "host",
    [
        f"smtp://user:{CANARY}@mail.example.com:587",
        f"user:{CANARY}@mail.example.com",
        "mail.example.com\r\n",
        "mail example.com",
    ],
)
def test_an_smtp_host_that_is_a_url_is_refused_without_showing_it(worker, host):
    """The host went into every error as it was ("SMTP smtp://user:password@...:
    gaierror"), in the job's error the API shows."""
    config = {"host": host}
    with pytest.raises(ValidationError) as refused:
        Connector(name="mail", kind="smtp", config=config).full_clean()
    assert "host: must be a host name or an IP address" in refused.value.message_dict["config"][0]
    assert CANARY not in str(refused.value)
    errors = mail_job_errors(worker, {"host": "mail.example.com"}, config)
    assert "config.host" in errors[0]["error"] and CANARY not in json.dumps(errors)


@pytest.mark.parametrize(
    "sender", ["jobs@example.com\nBcc: all@example.com", "jobs@example.com\r\n"]
)
def test_an_smtp_sender_of_more_than_one_line_is_refused_on_save(worker, smtp_peer, sender):
    """Django refuses a header with a line break when it sends: the connector was saved
    and every mail job failed with ValueError, retried."""
    config = {"host": "127.0.0.1", "port": smtp_peer.port, "from_email": sender}
    with pytest.raises(ValidationError) as refused:
        Connector(name="mail", kind="smtp", config=config).full_clean()
    assert "from_email: must be on one line" in refused.value.message_dict["config"]
    errors = mail_job_errors(worker, {"host": "127.0.0.1", "port": smtp_peer.port}, config)
    assert "config.from_email: must be on one line" in errors[0]["error"]


@pytest.mark.parametrize("host", ["mail.example.com", "127.0.0.1", "::1", "[::1]", "smtp_relay"])
def test_smtp_hosts_that_are_names_or_addresses_are_taken(db, host):
    Connector(name="mail", kind="smtp", config={"host": host}).full_clean()


@pytest.mark.parametrize(
    "kind, config, key",
    [
        (
            "http",
            {"url": "https://hooks.example.com/x", "max_response_bytes": 2**62},
            "max_response_bytes",
        ),
        (
            "http",
            {"url": "https://hooks.example.com/x", "max_response_bytes": 10**30},
            "max_response_bytes",
        ),
        ("command", {"executable": "true", "max_output_bytes": 10**30}, "max_output_bytes"),
    ],
)
def test_a_byte_limit_no_read_can_take_is_refused_on_save(db, kind, config, key):
    """read(2**62 + 1) raised MemoryError and read(10**30 + 1) OverflowError on every
    answer without a Content-Length: every job of the connector failed, retried."""
    with pytest.raises(ValidationError) as refused:
        Connector(name="big", kind=kind, config=config).full_clean()
    assert (
        f"{key}: must be between 1 and 1073741824, not {config[key]}"
        in refused.value.message_dict["config"]
    )


# -- pipelines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stages, said",
    [
        (("abc",), "pipeline stage 1: expected a JobSpec or a list of them, not str"),
        ((None,), "pipeline stage 1: expected a JobSpec or a list of them, not NoneType"),
        ((["ADD"], [None]), "pipeline stage 2, job 0: expected a JobSpec"),
        (
            ("ADD", ["ADD", 5]),
            "pipeline stage 2, job 1: expected a JobSpec (task.spec(...)) or its dict, not int",
        ),
    ],
)
def test_a_pipeline_stage_that_holds_no_job_specs_is_a_type_error_saying_where(db, stages, said):
    """A string stage was read as one job per character, and 5 or None among the specs
    raised AttributeError ("'int' object has no attribute 'depends_on'")."""
    spec = add_task.spec(1, 2)
    stages = tuple(
        spec if s == "ADD" else [spec if i == "ADD" else i for i in s] if isinstance(s, list) else s
        for s in stages
    )
    with transaction.atomic():
        with pytest.raises(TypeError, match=re.escape(said)):
            enqueue_pipeline(*stages)
        assert not Job.objects.exists()


def test_a_pipeline_stage_may_hold_dicts_as_enqueue_many_takes_them(db):
    (first,), (second,) = enqueue_pipeline(add_task.spec(1, 2), [{"task": ADD, "args": [3, 4]}])
    assert second.args == [3, 4] and second.meta["pipeline"] == first.meta["pipeline"]
