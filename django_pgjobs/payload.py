"""Checking that job arguments (and meta, and results) can be stored as JSON and read
back, and pointing at what can't.

What ``jsonb`` and every reader take: JSON's own types (or subclasses of them),
finite numbers, integers Python can print (up to 4,300 digits), strings without
NUL characters or lone surrogates in values and keys alike, at most ``MAX_DEPTH``
levels of nesting (which also refuses a list or dict that contains itself), and
no more than ``PGJOBS["MAX_PAYLOAD_BYTES"]`` of JSON.

The check costs little on the way every job goes: one pass over the values
(``_is_plain``), the JSON text that is stored anyway, and a scan of that text
for the escapes NUL and surrogates become. Only a value that fails it is walked
again to say where the fault is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring,
    encode_basestring_ascii,
)
from typing import Any

from .exceptions import PayloadError
from .limits import repr_text, shortened, shown, text_problem

#: Most levels of lists and dicts inside one another. Readers parse and print
#: JSON by recursion (Python's json module, the admin's indented view), and a
#: value that contains itself has no end: both must stop well before the stack does.
MAX_DEPTH = 100

_SCALARS = frozenset({str, int, bool, type(None)})

#: The escapes a NUL (``\u0000``) and a surrogate (``\ud800``-``\udfff``) become in
#: ASCII JSON text. Searched for with its literal prefix: a scan as quick as str.find.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])")


def _plain_at(depth: int, inner: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
    """The quick test for a value ``depth`` levels down, which tests what it holds with
    ``inner`` (None at MAX_DEPTH: no more lists or dicts). A chain of functions rather
    than a depth argument: ``map`` then calls each with one argument, as quick as a
    test without depth."""

    def is_plain(value: Any) -> bool:
        kind = type(value)
        if kind in _SCALARS:
            return True
        if kind is float:
            return math.isfinite(value)
        if inner is None:
            return False
        if kind is list or kind is tuple:
            return all(map(inner, value))
        if kind is dict:
            return all(type(key) is str for key in value) and all(map(inner, value.values()))
        return False

    is_plain.__qualname__ = f"is_plain_at_{depth}"
    return is_plain


def _plain_chain() -> list[Callable[[Any], bool]]:
    chain = [_plain_at(MAX_DEPTH, None)]
    for depth in range(MAX_DEPTH - 1, -1, -1):
        chain.append(_plain_at(depth, chain[-1]))
    return chain[::-1]


#: _PLAIN_AT[depth](value): whether ``value``, ``depth`` levels down, is made of nothing
#: but JSON's own types, finite numbers and lists and dicts at most MAX_DEPTH levels
#: deep. The quick test, which builds no paths. (A subclass, say an IntEnum, fails it
#: and is judged by ``_find_bad_value``, which takes it.)
_PLAIN_AT = _plain_chain()
_is_plain = _PLAIN_AT[0]


def is_plain(value: Any) -> bool:
    """Whether ``value`` is made of JSON's own types only, finite numbers, and lists and
    dicts at most MAX_DEPTH levels deep: what enqueue stores, and a reader of a row
    written any other way can walk by recursion."""
    return _is_plain(value)


def _find_bad_value(
    value: Any, path: str, depth: int = 0, within: frozenset = frozenset()
) -> str | None:
    """The path of the first value that can't be stored as JSON and read back, and why; or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:
            return f"{path} is an integer of more than 4300 digits (Python can't read it back)"
        return None
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{path} {problem}" if problem else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} = {value!r} (not a finite number)"
    if isinstance(value, list | tuple | dict):
        if id(value) in within:
            return f"{path} contains itself"
        if depth >= MAX_DEPTH:
            shorter = path if len(path) <= 60 else f"{path[:25]}...{path[-25:]}"
            return f"{shorter} is nested more than {MAX_DEPTH} levels deep"
        within = within | {id(value)}
        if isinstance(value, dict):
            return _find_bad_item(value, path, depth + 1, within)
        for index, item in enumerate(value):
            found = _find_bad_value(item, f"{path}[{index}]", depth + 1, within)
            if found:
                return found
        return None
    return f"{path} = {shown(value)} (type {type(value).__name__})"


def _find_bad_item(value: dict, path: str, depth: int, within: frozenset) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return f"{path} has key {shown(key)} of type {type(key).__name__} (keys must be str)"
        problem = text_problem(key)
        if problem:
            return f"{path} has a key that {problem}: {key!r}"
        found = _find_bad_value(item, f"{path}[{key!r}]", depth, within)
        if found:
            return found
    return None


def _compact_json(ascii_only: bool = True) -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False)``, four times
    quicker on small values: ``JSONEncoder.encode`` sets up a new C encoder on
    every call, this one is set up once. (It skips the check for circular
    values, which never get this far: ``_is_plain`` stops at ``MAX_DEPTH``.)"""
    options = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=ascii_only)
    if c_make_encoder is None:  # a Python without the C accelerator
        return options.encode
    encoder = c_make_encoder(
        None,  # no circularity markers
        options.default,
        encode_basestring_ascii if ascii_only else encode_basestring,
        None,  # no indent
        options.key_separator,
        options.item_separator,
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    return lambda value: "".join(encoder(value, 0))


#: Compact JSON, ASCII only (the rest is escaped), for checks and for storing.
dumps = _compact_json()
_dumps_unicode = _compact_json(ascii_only=False)


def problem(value: Any, name: str) -> str | None:
    """Why ``value`` (called ``name`` in the answer) can't be stored as JSON and read
    back, or None. For a value checked once, such as a form field's."""
    try:
        encode(value, name)
    except PayloadError as error:
        return str(error)
    return None


def shaped_problem(value: Any, name: str, kind: type, example: str = "") -> str | None:
    """``problem``, for a value that must also be a JSON array (``kind`` list) or
    object (dict): a schedule's args and kwargs, a connector's config."""
    if not isinstance(value, kind):
        shape = "list" if kind is list else "object"
        return f"{name} must be a JSON {shape}" + (f", e.g. {example}" if example else "")
    return problem(value, name)


def encode(value: Any, name: str) -> str:
    """``value`` as the compact ASCII JSON that is stored; PayloadError naming the
    part of it that can't be stored or read back."""
    if not _is_plain(value):
        _refuse(value, name)  # raises, unless the value is of subclasses of JSON types
    try:
        encoded = dumps(value)
    except (ValueError, RecursionError):  # an integer Python won't print
        _refuse(value, name)
        raise
    if _SUSPECT_ESCAPE.search(encoded) and _has_unstorable_text(encoded, value):
        _refuse(value, name)
    return encoded


def encoded_size(args: Any, kwargs: Any) -> int:
    """Check args/kwargs can be stored as JSON; their encoded size in bytes.

    ``encode`` of both at once, the way every job goes: one text, which is what is
    stored, and is ASCII (the rest is escaped), so a byte a character.
    """
    if not args and not kwargs:  # many jobs of a large batch take nothing
        return 7  # [[],{}]
    if not (_is_plain(args) and _is_plain(kwargs)):
        _refuse_arguments(args, kwargs)
    try:
        encoded = dumps([args, kwargs])
    except (ValueError, RecursionError):
        _refuse_arguments(args, kwargs)
        raise
    if _SUSPECT_ESCAPE.search(encoded) and _has_unstorable_text(encoded, [args, kwargs]):
        _refuse_arguments(args, kwargs)
    return len(encoded)


def _has_unstorable_text(encoded: str, value: Any) -> bool:
    """Whether ``value``, encoded as ``encoded``, has a NUL or a lone surrogate.

    The escapes tell, looked at closer: ``\\u0000`` is a NUL unless its backslash is
    the second of an escaped one (the text "\\u0000"); a surrogate escape is also
    either half of an astral character (an emoji, say), so the value is encoded
    once more without escapes, where only lone surrogates fail.
    """
    surrogates_checked = False
    for suspect in _SUSPECT_ESCAPE.finditer(encoded):
        start = suspect.start()
        if encoded.startswith("\\u0000", start):
            before = start
            while before and encoded[before - 1] == "\\":
                before -= 1
            if (start - before) % 2 == 0:  # not itself escaped: a NUL
                return True
        elif not surrogates_checked:
            surrogates_checked = True
            try:
                _dumps_unicode(value).encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


#: How ``_find_bad_value`` names a value of a type JSON has not.
_FOREIGN = re.compile(r" \(type \w+\)$")

#: Said when a task's argument is such a value: a date is the usual one, and
#: ``@task(typed=True)`` is how a task takes it.
TYPED_HINT = (
    "; arguments are stored as JSON: pass JSON's own types (a date as its isoformat()), "
    "or declare the task with @task(typed=True) to pass the dates, datetimes, Decimals, "
    "UUIDs, enums and dataclasses its type hints name (docs/typed-arguments.md)"
)


def _refuse_arguments(args: Any, kwargs: Any) -> None:
    for value, name in ((args, "args"), (kwargs, "kwargs")):
        bad = _find_bad_value(value, name)
        if bad:
            hint = TYPED_HINT if _FOREIGN.search(bad) else ""
            raise PayloadError(f"{name} can't be stored as JSON: {bad}{hint}", field=name)


def _refuse(value: Any, name: str) -> None:
    bad = _find_bad_value(value, name)
    if bad:
        raise PayloadError(f"{name} can't be stored as JSON: {bad}", field=name)


def check(args: Any, kwargs: Any, limit: int) -> None:
    if not isinstance(args, list | tuple):
        raise PayloadError(f"args must be a list, not {type(args).__name__}", field="args")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"kwargs must be a dict, not {type(kwargs).__name__}", field="kwargs")
    size = encoded_size(args, kwargs)
    if size > limit:
        raise PayloadError(
            f"job arguments are {size} bytes of JSON, over the limit of {limit} "
            "(PGJOBS['MAX_PAYLOAD_BYTES']); store large data elsewhere and pass its id",
            field="args",
        )


def given_meta(meta: Any) -> dict[str, Any]:
    """A caller's meta to add keys to (a pipeline's): None is none, as for kwargs;
    anything but a dict is refused, an empty one of another type too (``meta or {}``
    took ``[]``, ``""`` and 0 for none)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise PayloadError(f"meta must be a dict, not {type(meta).__name__}", field="meta")
    return meta


def check_meta(meta: Any, limit: int) -> None:
    """A job's meta: a dict of JSON, like kwargs."""
    if not isinstance(meta, dict):
        raise PayloadError(f"meta must be a dict, not {type(meta).__name__}", field="meta")
    size = len(encode(meta, "meta"))
    if size > limit:
        raise PayloadError(
            f"meta is {size} bytes of JSON, over the limit of {limit} "
            "(PGJOBS['MAX_PAYLOAD_BYTES'])",
            field="meta",
        )


# -- reading back, and what a worker stores ------------------------------------------------


class Unreadable(str):
    """A stored JSON value that Python's json can't read back (written around enqueue: by
    SQL, an old version, a bug), kept as its text; ``problem`` says why."""

    problem: str


def _finite_float(text: str) -> float:
    """A JSON number with a fraction, as a float; refused if a float can't hold it.
    jsonb keeps any decimal as it is (1e400 as 1 and 400 zeros): Python's json read
    one of 310 digits and a fraction as infinity, which answers and ``--json`` output
    then carried as ``Infinity``, no JSON any other parser reads."""
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {shortened(text, 30)} is beyond a float's range")
    return number


#: The decoder of every stored JSON value: ``decode(text)``, as ``json.loads(text)``
#: but for numbers past a float's range (``_finite_float``).
decode = json.JSONDecoder(parse_float=_finite_float).decode


def unreadable(text: str, error: BaseException) -> Unreadable:
    """``text`` as an Unreadable value, for the JSON that ``error`` refused to load."""
    value = Unreadable(text)
    if isinstance(error, RecursionError):
        value.problem = "its JSON is nested deeper than Python can read"
    else:
        value.problem = f"its JSON can't be read by Python: {shown(str(error), 120)}"
    return value


def loads(text: str) -> Any:
    """A stored JSON text as Python values; if Python can't read it back (an integer of
    more than 4,300 digits, a decimal past a float's range, nesting deeper than the
    stack), an ``Unreadable``, so that whoever reads the row (a worker, the API, the
    admin) carries on."""
    try:
        return decode(text)
    except (ValueError, RecursionError) as error:
        return unreadable(text, error)


def names_in(value: Any) -> list[str]:
    """The names of a stored JSON list of names (a token's scopes, a worker's queues,
    a connector's secret names). What is no list of strings (written by SQL) names
    nothing: text must never grant a queue by a substring of it."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def storable_text(text: str, limit: int) -> str:
    """``text`` as a text column can hold it: NUL and lone surrogates written as
    escapes, cut to ``limit`` characters (for error records, whose text comes
    from exceptions: a task's, or a library's quoting what it was given)."""
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


#: Most characters of the repr that stands in for a result that can't be stored.
RESULT_REPR_LENGTH = 2_000


def storable_result(
    value: Any, limit: int, excerpt: Callable[[str, int], str] = shortened
) -> tuple[Any, str | None]:
    """``value`` if it can be stored as a job's result (the rules of arguments), and
    None; otherwise what stands in for it, ``{"repr": ..., "unstorable": why}``, and why.
    ``excerpt`` cuts the repr (a job's masks it first: a secret the cut split in two
    would leave its first part unmasked).

    Most results are None, a bool, a number or a short string: those cost a type test.
    """
    kind = type(value)
    if value is None or kind is bool:
        return value, None
    if kind is int and value.bit_length() < 14_000:  # fewer than 4,215 digits
        return value, None
    if kind is str and len(value) * 6 <= limit and value.isascii() and "\x00" not in value:
        return value, None  # ASCII JSON escapes a character in at most 6
    try:
        size = len(encode(value, "result"))
    except PayloadError as error:
        why = str(error)
    else:
        if size <= limit:
            return value, None
        why = f"result is {size} bytes of JSON, over the limit of {limit} (MAX_PAYLOAD_BYTES)"
    said = excerpt(repr_text(value), RESULT_REPR_LENGTH)
    stand_in = {"repr": storable_text(said, RESULT_REPR_LENGTH), "unstorable": why}
    return stand_in, why
