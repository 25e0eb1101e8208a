"""Turning request bodies and query strings into checked values, naming each bad field."""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from .. import limits
from ..exceptions import InvalidOption
from ..states import CLAIMABLE


class Invalid(Exception):
    """A request with bad fields; ``fields`` maps each one to what is wrong with it."""

    def __init__(self, fields: dict[str, str], message: str = "the request is invalid") -> None:
        self.fields = fields
        super().__init__(message)


def parse_json_object(raw: bytes, *, null: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object ``raw`` holds; ``null`` (if given) for a body of JSON ``null``."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    def once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of two equal keys; a proxy or log reading the first would
        # see another task, queue or argument than the one enqueued.
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"the key {limits.shown(key)} appears twice in one object")
            seen[key] = value
        return seen

    try:
        body = json.loads(
            utf8_text(raw) or "null",
            parse_constant=no_constants,
            object_pairs_hook=once_each,
        )
    except ValueError as problem:
        raise Invalid({"body": f"not valid JSON: {_said(problem)}"}) from None
    except RecursionError:
        raise Invalid({"body": "nested too deeply"}) from None
    if body is None and null is not None:
        return null
    if not isinstance(body, dict):
        raise Invalid({"body": "must be a JSON object"})
    return body


def utf8_text(raw: bytes) -> str:
    """``raw`` read as UTF-8, strictly, after a UTF-8 byte order mark if it has one
    (RFC 8259 8.1 lets a parser ignore it, and .NET clients write one). json.loads(bytes)
    also read UTF-16 and UTF-32, which JSON between systems is not (RFC 8259 8.1): a
    proxy, a WAF or a log reading the body as UTF-8 saw another one than the job enqueued.
    It also let UTF-8-encoded surrogates through ("surrogatepass")."""
    guessed = json.detect_encoding(raw)
    if guessed.startswith(("utf-16", "utf-32")):
        # Its NUL bytes may well be valid UTF-8: say what it is, not "Expecting value".
        named = guessed[:6].upper()
        raise Invalid({"body": f"not UTF-8 (it looks like {named}): {UTF8_ONLY}"})
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as bad:
        at = bom + bad.start
        said = f"byte 0x{raw[at]:02x} at offset {at} ({bad.reason})"
        raise Invalid({"body": f"not UTF-8, {said}: {UTF8_ONLY}"}) from None


UTF8_ONLY = "send JSON in UTF-8, the only encoding this API reads (RFC 8259)"


def _said(problem: Exception) -> str:
    """json's refusal in the API's words: int()'s own, for a number of more digits than
    the interpreter reads, tells the client to call sys.set_int_max_str_digits(). (Read
    from the error, not by a parse_int hook: one Python call per number made a body
    of many numbers parse 4-5x slower.)"""
    if isinstance(problem, ValueError) and "integer string conversion" in str(problem):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(problem)


# -- POST /jobs -------------------------------------------------------------------------


def _within_limits(check: Callable[[Any], Any], value: Any) -> Any:
    """``check(value)`` (one of ``limits``), its refusal said of the field."""
    try:
        return check(value)
    except InvalidOption as refused:
        raise ValueError(refused.problem) from None


def _string(max_length: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        if len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters")
        return _within_limits(lambda text: limits.text(text, "", max_length), value)

    return check


def _key(max_length: int) -> Callable[[Any], Any]:
    """A unique_key: a string as ``_string`` takes, or ``""`` for none, as
    ``Job.enqueue`` takes it (the API refused ``""`` while the Python API made no key
    of it and the OpenAPI description allowed it)."""
    check_string = _string(max_length)

    def check(value: Any) -> Any:
        return None if value == "" else check_string(value)

    return check


def _integer(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("must be an integer")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return check


def _of_type(kind: type, name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise ValueError(f"must be a JSON {name}")
        return value

    return check


def _timestamp(value: Any) -> datetime:
    example = "an ISO 8601 date-time, e.g. 2030-01-01T09:00:00Z"
    if isinstance(value, str) and not _plain_ascii(value):
        # Django's parser (\d, int()) reads other scripts' digits and a final newline:
        # "\u0662\u0660\u0663\u0660-01-01" was 2030, which a proxy or a log reads apart.
        raise ValueError(f"must be {example}, in ASCII without spaces or controls around it")
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError as problem:  # a date that is none (2024-02-30), an offset over 24h
        raise ValueError(f"must be {example}: {problem}") from None
    if parsed is None:
        raise ValueError(f"must be {example}")
    if parsed.tzinfo is None:
        raise ValueError("must include a time zone (Z or +hh:mm)")
    return _within_limits(limits.moment, parsed)


def _plain_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and text == text.strip()


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError("must be a number of seconds greater than 0")
    return _within_limits(limits.timeout, value)


ENQUEUE_FIELDS: dict[str, Callable[[Any], Any]] = {
    "task": _string(255),
    "args": _of_type(list, "array"),
    "kwargs": _of_type(dict, "object"),
    "queue": _string(63),
    "run_at": _timestamp,
    "priority": _integer(*limits.SMALLINT),
    "max_attempts": _integer(1, limits.MAX_ATTEMPTS),
    "unique_key": _key(255),
    "connector": _string(100),
    "timeout": _seconds,
}


def parse_enqueue(body: Mapping[str, Any]) -> dict[str, Any]:
    """Checked keyword arguments for ``Job.enqueue``; null means "use the default"."""
    problems: dict[str, str] = {}
    options: dict[str, Any] = {}
    for name in sorted(set(body) - set(ENQUEUE_FIELDS)):
        problems[name] = f"unknown field; known fields: {', '.join(ENQUEUE_FIELDS)}"
    if body.get("task") is None:
        problems["task"] = "is required"
    for name, check in ENQUEUE_FIELDS.items():
        if body.get(name) is None:
            continue
        try:
            options[name] = check(body[name])
        except ValueError as problem:
            problems[name] = str(problem)
    if problems:
        raise Invalid(problems)
    return options


# -- POST /jobs/run ---------------------------------------------------------------------

RUN_PARAMETERS = ("queue", "status", "limit", "max_seconds")
MAX_RUN_LIMIT = 100


@dataclass
class RunRequest:
    queues: list[str] | None
    states: list[str] | None
    limit: int
    max_seconds: float | None


def parse_run(query: Mapping[str, str], body: Mapping[str, Any] | None = None) -> RunRequest:
    """The parameters of a run, from the query string and a JSON object ``body`` (one
    place each); a value of ``null`` in the body is one not given."""
    body = {name: value for name, value in (body or {}).items() if value is not None}
    problems: dict[str, str] = {}
    for name in sorted((set(query) | set(body)) - set(RUN_PARAMETERS)):
        problems[name] = f"unknown parameter; known: {', '.join(RUN_PARAMETERS)}"
    values: dict[str, Any] = {"queue": None, "status": None, "limit": 10, "max_seconds": None}
    for name in RUN_PARAMETERS:
        given = _all_of(query, name)
        try:
            if len(given) > 1:
                raise ValueError("given more than once")
            if given and name in body:
                raise ValueError("given in both the query string and the body: give it once")
            if given:
                values[name] = RUN_IN_QUERY[name](given[0])
            elif name in body:
                values[name] = RUN_IN_BODY[name](body[name])
        except ValueError as problem:
            problems[name] = str(problem)
    if problems:
        raise Invalid(problems)
    return RunRequest(values["queue"], values["status"], values["limit"], values["max_seconds"])


def _all_of(query: Mapping[str, str], name: str) -> list[str]:
    getlist = getattr(query, "getlist", None)  # a QueryDict keeps every value given
    return getlist(name) if getlist else [query[name]] if name in query else []


#: Numbers in a query string, in ASCII digits: int() and float() also read " 5", "+5",
#: "1_0", "1e2" and other scripts' digits.
_WHOLE = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")


def _in_query(
    pattern: re.Pattern[str], read: Callable[[str], Any], check: Callable[[Any], Any], what: str
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if not pattern.fullmatch(text):
            raise ValueError(f"must be {what} in ASCII digits, not {limits.shown(text)}")
        return check(read(text))

    return parse


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    # An empty name was dropped, and a list of none ran every queue of the token: "queue="
    # or "mail,,default" is a mistake to say, not a choice of everything.
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise ValueError(f"must be comma-separated names, none empty, not {limits.shown(value)}")
    # Refused, as a parameter given twice is (and a key twice in a body): "mail,mail" is
    # a mistake of whatever wrote it, to be said rather than read one way or another.
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise ValueError(f"names {limits.shown(twice)} twice: give each name once")
    return names


def _names_in_body(value: Any) -> list[str] | None:
    """A JSON string of comma-separated names, as in the query string, or an array of them."""
    if isinstance(value, str):
        return _names(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        if not value or not all(item.strip() for item in value):
            raise ValueError(f"must be an array of names, none empty, not {limits.shown(value)}")
        return _names(",".join(value))
    what = "a string of comma-separated names or an array of strings"
    raise ValueError(f"must be {what}, not {limits.shown(value)}")


def _states(names: list[str] | None) -> list[str] | None:
    if names and not set(names) <= set(CLAIMABLE):
        raise ValueError(f"must be among {', '.join(sorted(CLAIMABLE))} (comma-separated)")
    return names


def _number_in_body(check: Callable[[Any], Any], what: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be {what}, not {limits.shown(value)}")
        return check(value)

    return parse


_LIMIT = _integer(1, MAX_RUN_LIMIT)

#: Each parameter of a run, read from the query string (text) and from a JSON body.
RUN_IN_QUERY: dict[str, Callable[[str], Any]] = {
    "queue": _names,
    "status": lambda text: _states(_names(text)),
    "limit": _in_query(_WHOLE, int, _LIMIT, "an integer"),
    "max_seconds": _in_query(_DECIMAL, float, _seconds, "a number of seconds (50, 0.5)"),
}
RUN_IN_BODY: dict[str, Callable[[Any], Any]] = {
    "queue": _names_in_body,
    "status": lambda value: _states(_names_in_body(value)),
    "limit": _number_in_body(_LIMIT, "a JSON integer"),
    "max_seconds": _number_in_body(_seconds, "a JSON number of seconds (50, 0.5)"),
}
