"""Checking that job arguments can be stored as JSON, and pointing at what can't."""

from __future__ import annotations

import json
import math
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


# One encoder for every check: json.dumps with options builds a new one per call,
# which was most of the cost of checking a small payload.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encoded_size(args: Any, kwargs: Any) -> int:
    """Check args/kwargs are plain JSON and return their encoded size in bytes."""
    if args in ([], ()) and kwargs == {}:  # many jobs of a large batch take nothing
        return 7  # [[],{}]
    for name, value in (("args", args), ("kwargs", kwargs)):
        bad = _find_bad_value(value, name)
        if bad:
            raise PayloadError(f"job arguments must be JSON-serialisable: {bad}")
    return len(_encode([args, kwargs]).encode())


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
