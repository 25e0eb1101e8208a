"""New jobs as the text of a ``COPY pgjobs_job FROM STDIN`` (``sql/copy_jobs.sql``).

The jobs of a large batch mostly differ only in their id and arguments: the
columns they share (task, queue, state, times, ...) are turned into COPY text
once for each distinct set of values, and each job adds only what is its own.
Handing psycopg every value of every row instead cost more client time than
PostgreSQL spent storing the rows.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from . import db

if TYPE_CHECKING:
    from .models import Job

#: Columns formatted for each job: they are its own, or hold lists and dicts.
#: copy_jobs.sql names them first; the rest are formatted once per distinct set.
OWN_COLUMNS = ("id", "args", "kwargs", "meta", "errors", "result")

#: Rows per chunk handed to the connection.
CHUNK = 1000

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_EMPTY_JSON = {list: "[]", dict: "{}"}
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def text(value: Any) -> str:
    """One value in COPY's text format (NULL is ``\\N``)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):  # an IntEnum too: its number
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # datetimes too: ISO 8601, with their offset
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"no COPY text for {type(value).__name__}")


def json_text(value: Any) -> str:
    """A JSON column's value (None stays NULL, not JSON null)."""
    if value is None:
        return "\\N"
    if not value and type(value) in _EMPTY_JSON:  # most JSON fields of a new job
        return _EMPTY_JSON[type(value)]
    encoded = _encode_json(value)  # ASCII: tabs and newlines arrive escaped
    return encoded.replace("\\", "\\\\") if "\\" in encoded else encoded


def lines(jobs: Iterable[Job]) -> Iterator[str]:
    """The jobs as COPY text, ``CHUNK`` rows at a time."""
    own, shared = _layout()
    shared_values: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*shared)
    formatted: dict[tuple[Any, ...], str] = {}
    chunk: list[str] = []
    for job in jobs:
        values = job.__dict__
        key = shared_values(values)
        tail = formatted.get(key)
        if tail is None:
            tail = formatted[key] = "\t".join(map(text, key))
        chunk.append(
            "\t".join([to_text(values[name]) for name, to_text in own]) + "\t" + tail + "\n"
        )
        if len(chunk) == CHUNK:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


@functools.cache
def _layout() -> tuple[list[tuple[str, Callable[[Any], str]]], list[str]]:
    """copy_jobs.sql's columns as attnames: the job's own (each with its
    formatter), then the shared ones. Read from the statement, which says the order."""
    from django.db.models import JSONField

    from .models import Job

    listed = re.search(r"COPY pgjobs_job \(([^)]*)\)", db.statement("copy_jobs"))
    if listed is None:
        raise AssertionError("copy_jobs.sql must name its columns")
    columns = [name.strip() for name in listed.group(1).split(",")]
    if tuple(columns[: len(OWN_COLUMNS)]) != OWN_COLUMNS:
        raise AssertionError(f"copy_jobs.sql must list {OWN_COLUMNS} first")
    by_column = {field.column: field for field in Job._meta.concrete_fields}
    own = [by_column[name] for name in OWN_COLUMNS]
    return (
        [(f.attname, json_text if isinstance(f, JSONField) else text) for f in own],
        [by_column[name].attname for name in columns[len(OWN_COLUMNS) :]],
    )
