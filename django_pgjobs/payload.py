"""Checking that job arguments can be stored as JSON, and pointing at what can't."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from .exceptions import PayloadError


def _find_bad_value(value: Any, path: str) -> str | None:
    """The path of the first value json can't round-trip, or None."""
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} = {value!r} (not a finite number)"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_bad_value(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has key {key!r} of type {type(key).__name__} (keys must be str)"
            found = _find_bad_value(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return f"{path} = {value!r} (type {type(value).__name__})"


_SCALARS = frozenset({str, int, bool, type(None)})


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is made of nothing but JSON's own types: the quick test,
    which builds no paths. (A subclass, say an IntEnum, fails it and is judged
    by ``_find_bad_value``, which takes it.)"""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list or kind is tuple:
        return all(map(_is_plain, value))
    if kind is dict:
        return all(type(key) is str for key in value) and all(map(_is_plain, value.values()))
    return False


def _compact_json() -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False)``, four times
    quicker on small values: ``JSONEncoder.encode`` sets up a new C encoder on
    every call, this one is set up once. (It skips the check for circular
    values, which never get this far: ``_is_plain`` recurses forever on them first.)"""
    options = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    if c_make_encoder is None:  # a Python without the C accelerator
        return options.encode
    encoder = c_make_encoder(
        None,  # no circularity markers
        options.default,
        encode_basestring_ascii,
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


def encoded_size(args: Any, kwargs: Any) -> int:
    """Check args/kwargs are plain JSON and return their encoded size in bytes."""
    if not args and not kwargs:  # many jobs of a large batch take nothing
        return 7  # [[],{}]
    if not (_is_plain(args) and _is_plain(kwargs)):
        for name, value in (("args", args), ("kwargs", kwargs)):
            bad = _find_bad_value(value, name)
            if bad:
                raise PayloadError(f"job arguments must be JSON-serialisable: {bad}")
    return len(dumps([args, kwargs]))  # ASCII (non-ASCII is escaped): a byte per character


def check(args: Any, kwargs: Any, limit: int) -> None:
    if not isinstance(args, list | tuple):
        raise PayloadError(f"args must be a list, not {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"kwargs must be a dict, not {type(kwargs).__name__}")
    size = encoded_size(args, kwargs)
    if size > limit:
        raise PayloadError(
            f"job arguments are {size} bytes of JSON, over the limit of {limit} "
            "(PGJOBS['MAX_PAYLOAD_BYTES']); store large data elsewhere and pass its id"
        )
