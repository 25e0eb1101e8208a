"""JSON views of the HTTP API. Each one: check the method and the token, parse,
call the library, shape the answer. Errors are JSON: ``{"error", "message",
"fields"?}``; a refused request changes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.cache import get_conditional_response, set_response_etag
from django.views.decorators.csrf import csrf_exempt

from .. import conf, kept_errors, limits, logs, payload, queues, shown
from ..exceptions import (
    InvalidOption,
    InvalidQueueName,
    PayloadError,
    UniqueKeyConflict,
    UnknownConnector,
    UnknownQueue,
    UnknownTask,
)
from ..inline import run_due
from ..models import ApiToken, Job
from ..payload import names_in
from ..tasks import get_task
from ..transitions import ERROR_LENGTH, TRACEBACK_LENGTH
from .openapi import document as openapi_document
from .tokens import TokenRefused, authenticate
from .validation import RUN_PARAMETERS, Invalid, parse_enqueue, parse_json_object, parse_run

View = Callable[..., HttpResponse]

logger = logging.getLogger(__name__)


def name_refused(bad: UnknownQueue | UnknownConnector | InvalidQueueName) -> str:
    """What a request is told of a queue or connector refused: an unknown one without
    the Python API's "did you mean", which names one the token's holder did not send."""
    if isinstance(bad, UnknownQueue | UnknownConnector):
        return str(type(bad)(bad.name))
    return str(bad)


def error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "message": message, **extra}, status=status)


#: How an operator gives a token what it lacks, said by the 403 that refuses it.
GRANT = {
    "can_enqueue": " (an operator ticks it in the admin's API tokens)",
    "can_read": " (an operator ticks it in the admin's API tokens)",
    "can_run": " (an operator ticks it in the admin's API tokens, or issues a token"
    " with `manage.py issue_api_token --run`)",
    "queues": " (an operator adds it to the token's queues in the admin's API tokens)",
    "connectors": " (an operator adds it to the token's connectors in the admin's API tokens)",
}


def api_view(method: str, permission: str) -> Callable[[View], View]:
    """Method check, bearer-token authentication and permission, JSON errors. A GET
    view answers HEAD too (monitors and load balancers send it), as GET without a body
    (``as_read``)."""
    allowed = (method, "HEAD") if method == "GET" else (method,)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        @csrf_exempt  # token in a header, never a cookie: nothing to forge
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            answer = _answer(request, view, allowed, permission, *args, **kwargs)
            return as_read(request, answer)

        return wrapped

    return decorate


def _answer(
    request: HttpRequest,
    view: View,
    allowed: tuple[str, ...],
    permission: str,
    *args: Any,
    **kwargs: Any,
) -> HttpResponse:
    """What ``api_view`` answers, before a HEAD loses its body."""
    if request.method not in allowed:
        return method_not_allowed(allowed)
    try:
        token = authenticate(request.headers.get("Authorization"))
    except TokenRefused as refused:
        response = error(401, "unauthorized", str(refused))
        response["WWW-Authenticate"] = 'Bearer realm="pgjobs", error="invalid_token"'
        return response
    if not getattr(token, permission):
        return error(403, "forbidden", f"this token does not have {permission}{GRANT[permission]}")
    try:
        with logs.api_token(token):
            return view(request, token, *args, **kwargs)
    except Invalid as invalid:
        return error(400, "invalid", str(invalid), fields=invalid.fields)


def method_not_allowed(allowed: tuple[str, ...]) -> HttpResponse:
    """The 405 of a route that answers only ``allowed`` (the first one named)."""
    response = error(405, "method_not_allowed", f"use {allowed[0]}")
    response["Allow"] = ", ".join(allowed)
    return response


def as_read(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The answer to a GET, and to a HEAD the same one, its Content-Length too, whose
    body is never sent (``HeadAnswer``). Both with the ETag ConditionalGetMiddleware
    gives a GET (it skips HEAD): a HEAD's ETag must be the GET's. Both answered 304
    when the client's If-None-Match holds that ETag (RFC 9110 13.1.2), here and not
    by the middleware alone: it skips HEAD, and a project may not have it."""
    if request.method not in ("GET", "HEAD") or response.streaming:
        return response
    set_response_etag(response)
    conditional = get_conditional_response(request, etag=response.get("ETag"), response=response)
    if request.method == "GET" or conditional is not response:
        return conditional
    answer = HeadAnswer(
        response.content,
        status=response.status_code,
        reason=response.reason_phrase,
        headers=dict(response.items()),
    )
    answer["Content-Length"] = str(len(response.content))
    return answer


class HeadAnswer(HttpResponse):
    """A GET's answer given to a HEAD. Its body stays until the middleware is done
    with it: emptied by the view, GZipMiddleware left it alone, and the HEAD went
    without the GET's Content-Encoding, Vary and compressed Content-Length. It is
    never sent: a WSGI server sends what it iterates, and not every one drops the
    body of a HEAD's answer (wsgiref's doesn't). Django's ASGI handler sends the
    content: uvicorn drops it for a HEAD, as ASGI servers do."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def job_json(job: Job) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.pk,
        "task": job.task,
        "queue": job.queue,
        "state": job.state,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "args": job.args,
        "kwargs": job.kwargs,
        "run_at": when(job.run_at),
        "created_at": when(job.created_at),
        "attempted_at": when(job.attempted_at),
        "finished_at": when(job.finished_at),
        "result": job.result,
        "errors": errors_json(job.errors),
        "errors_not_kept": kept_errors.not_kept(job),
        "unique_key": job.unique_key,
        "connector": job.connector,
        "timeout": job.timeout,
        "url": reverse("pgjobs:job", args=[job.pk]),
        "not_shown": {
            field: why
            for field, why in getattr(job, "not_shown", {}).items()
            if field in API_FIELDS
        },
    }


#: The job's JSON values an answer holds (of ``shown.FIELDS``; meta is the library's).
API_FIELDS = ("args", "kwargs", "result")


def errors_json(errors: Any) -> Any:
    """A job's error records, without tracebacks unless ``API_TRACEBACKS`` is on:
    they show server paths and source lines to clients. Their error and traceback are
    clipped as a worker writes them (ERROR_LENGTH, TRACEBACK_LENGTH), whatever the row."""
    if not isinstance(errors, list):
        return errors
    if len(errors) > kept_errors.KEPT:  # a job not read through kept_errors.bounded
        errors = errors[:1] + errors[1 - kept_errors.KEPT :]
    tracebacks = conf.get("API_TRACEBACKS")
    return [
        _record_json(record, tracebacks) if isinstance(record, dict) else record
        for record in errors
    ]


def _record_json(record: dict[str, Any], tracebacks: bool) -> dict[str, Any]:
    visible = {key: value for key, value in record.items() if key != "traceback"}
    if "error" in record:
        visible["error"] = kept_errors.clipped(record["error"], ERROR_LENGTH)
    if tracebacks and "traceback" in record:
        visible["traceback"] = kept_errors.clipped(record["traceback"], TRACEBACK_LENGTH)
    return visible


#: The charsets a JSON body may declare (``utf8`` is a common misspelling of it).
UTF8 = ("utf-8", "utf8")


def other_charset(request: HttpRequest) -> HttpResponse | None:
    """The 415 of a JSON body declared in a charset other than UTF-8, else None. It was
    read as UTF-8 whatever it said: a latin-1 "é" was a 400 about invalid UTF-8, or
    another character. JSON between systems is UTF-8 (RFC 8259 8.1), so it is refused."""
    charset = request.content_params.get("charset")
    if charset is None or charset.lower() in UTF8:
        return None
    return error(
        415,
        "unsupported_media_type",
        f"send the JSON body in UTF-8, the only charset this API reads (RFC 8259), "
        f"not charset={limits.shown(charset)}",
    )


@api_view("POST", "can_enqueue")
def enqueue(request: HttpRequest, token: ApiToken) -> HttpResponse:
    if request.content_type != "application/json":
        return error(415, "unsupported_media_type", "send the job as application/json")
    if refused := other_charset(request):
        return refused
    try:
        body = parse_json_object(request.body)
    except RequestDataTooBig:
        return error(
            413, "payload_too_large", "the request body is over DATA_UPLOAD_MAX_MEMORY_SIZE"
        )
    options = parse_enqueue(body)
    try:
        registered = get_task(options["task"])
    except UnknownTask as unknown:
        raise Invalid({"task": str(unknown)}) from None
    queue = options.get("queue") or registered.queue or conf.get("DEFAULT_QUEUE")
    if not token.allows_queue(queue):
        return error(403, "forbidden", f"this token may not use queue {queue!r}{GRANT['queues']}")
    connector = options.get("connector")
    if connector is not None and not token.allows_connector(connector):
        # A connector can send mail or run a command: naming one is a right of its own.
        return error(
            403, "forbidden", f"this token may not use connector {connector!r}{GRANT['connectors']}"
        )
    try:
        size = payload.encoded_size(options.get("args", []), options.get("kwargs", {}))
    except PayloadError as bad:  # a NUL, a lone surrogate, too deep, ...
        raise Invalid({bad.field or "args": str(bad)}) from None
    if size > conf.get("MAX_PAYLOAD_BYTES"):
        limit = conf.get("MAX_PAYLOAD_BYTES")
        message = f"args and kwargs are {size} bytes of JSON, over the limit of {limit}"
        return error(413, "payload_too_large", message, fields={"args": message})
    try:
        job = Job.enqueue(**options)
    except (UnknownQueue, InvalidQueueName) as bad:
        raise Invalid({"queue": name_refused(bad)}) from None
    except UnknownConnector as bad:
        raise Invalid({"connector": name_refused(bad)}) from None
    except (InvalidOption, PayloadError) as bad:  # an option the task gives, say
        raise Invalid({bad.field or "args": str(bad)}) from None
    except UniqueKeyConflict as held:  # by a job this request's snapshot can't read
        return error(409, "conflict", f"{held}: send the request again")
    duplicate = getattr(job, "is_duplicate", False)
    logger.info(
        "api: job %s (%s) %s on queue %s by token %s",
        job.pk,
        job.task,
        "already there (duplicate)" if duplicate else "enqueued",
        job.queue,
        logs.printable(token.name),
        extra=logs.job_fields(job),
    )
    # A duplicate is the job that held the key, written by anyone (SQL too): shown as
    # GET /jobs/<id> shows it, its values within the limit (Job.enqueue left its large
    # ones deferred: read whole if asked for).
    shown_job = shown.read_again(job) if duplicate else job
    response = JsonResponse(
        {**job_json(shown_job), "duplicate": duplicate}, status=200 if duplicate else 201
    )
    response["Location"] = reverse("pgjobs:job", args=[job.pk])
    return response


@api_view("GET", "can_read")
def job_detail(request: HttpRequest, token: ApiToken, job_id: str) -> HttpResponse:
    pk = limits.id_in_text(job_id)
    if pk is None:
        return error(404, "not_found", f"no job {limits.shown(job_id)}")
    jobs = shown.bounded(Job.objects.using(conf.get("DATABASE")))
    job = shown.read(jobs.filter(pk=pk).first())
    if job is None or not token.allows_queue(job.queue):
        # Jobs of other queues are not this token's to know about, not even that they exist.
        return error(404, "not_found", f"no job {pk}")
    return JsonResponse(job_json(job))


@transaction.non_atomic_requests  # each claim and outcome commits on its own, as in a worker
@api_view("POST", "can_run")
def run(request: HttpRequest, token: ApiToken) -> HttpResponse:
    try:
        body = request.body
    except RequestDataTooBig:
        return error(
            413, "payload_too_large", "the request body is over DATA_UPLOAD_MAX_MEMORY_SIZE"
        )
    # The parameters come in the query string or a JSON object: a body of another kind
    # (curl -d limit=5 sends a form) was ignored, and every due job ran.
    in_json = bool(body) and request.content_type == "application/json"
    if request.content_type == "application/json" and (refused := other_charset(request)):
        return refused
    if body and not in_json and not _empty_form(request):
        return error(
            415,
            "unsupported_media_type",
            "send the parameters in the query string, or in the body as a JSON object "
            "(Content-Type: application/json)",
        )
    wanted = parse_run(_query(request), parse_json_object(body, null={}) if in_json else None)
    scopes = names_in(token.queues)
    names = wanted.queues or (None if "*" in scopes else scopes)
    if names == []:
        return error(403, "forbidden", "this token has no queues")
    for name in names or ():
        if not token.allows_queue(name):
            return error(
                403, "forbidden", f"this token may not run queue {name!r}{GRANT['queues']}"
            )
        try:
            queues.check_known(name)
        except (UnknownQueue, InvalidQueueName) as bad:
            raise Invalid({"queue": name_refused(bad)}) from None
    report = run_due(
        names, states=wanted.states, limit=wanted.limit, max_seconds=wanted.max_seconds
    )
    logger.info("api: token %s ran %s job(s)", logs.printable(token.name), len(report.jobs))
    # Each job as it ended, not as it was claimed: its state was "executing", and its
    # result, errors and finished_at empty (one query; a job deleted since is shown
    # as it was claimed, as a worker loaded it).
    jobs = shown.bounded(Job.objects.using(conf.get("DATABASE")))
    ended = {
        pk: shown.read(job) for pk, job in jobs.in_bulk([j.pk for j, _ in report.jobs]).items()
    }
    return JsonResponse(
        {
            "ran": len(report.jobs),
            "stopped": report.stopped,
            "outcomes": report.outcomes(),
            "jobs": [
                {**job_json(ended.get(job.pk, job)), "outcome": outcome}
                for job, outcome in report.jobs
            ],
        }
    )


def _query(request: HttpRequest) -> Any:
    """The query string's parameters; ``Invalid`` for more than Django reads, whose
    TooManyFieldsSent was its HTML 400 page where every other refusal is JSON."""
    try:
        return request.GET
    except SuspiciousOperation:  # more than DATA_UPLOAD_MAX_NUMBER_FIELDS
        most = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        said = f"more than {most} parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS); known: "
        raise Invalid({"query": said + ", ".join(RUN_PARAMETERS)}) from None


def _empty_form(request: HttpRequest) -> bool:
    """Whether the body is a form without a field (what some clients send for "no body")."""
    if request.content_type == "multipart/form-data":
        # Only the close delimiter: Django's parser drops a part without a name, and
        # text that is no multipart at all, so "no field parsed" is no empty form.
        boundary = request.content_params.get("boundary", "").encode("latin-1", "replace")
        return bool(boundary) and request.body.strip() == b"--" + boundary + b"--"
    if request.content_type != "application/x-www-form-urlencoded":
        return False
    try:
        return not request.POST and not request.FILES
    except SuspiciousOperation:  # more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS
        return False


@csrf_exempt  # else CsrfViewMiddleware answers a POST with its 403 page, not this 405
def openapi(request: HttpRequest) -> HttpResponse:
    """The OpenAPI description of this API, with the arguments of each typed task
    (public: it describes, it grants nothing)."""
    if request.method not in ("GET", "HEAD"):
        # A POST here answered 200 with the document: a client that posts a job to
        # the wrong path must hear so, as at every other route.
        return method_not_allowed(("GET", "HEAD"))
    document = HttpResponse(openapi_document(), content_type="application/yaml")
    return as_read(request, document)
