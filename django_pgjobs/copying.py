"""New jobs in the binary format of ``COPY pgjobs_job FROM STDIN`` (``sql/copy_jobs.sql``).

The jobs of a large batch mostly differ only in their id and arguments: the
columns they share (task, queue, state, times, ...) are encoded once for each
distinct set of values, and each job adds only what is its own.

Binary, not text: PostgreSQL then parses no numbers or timestamps, which was
a quarter of its time storing a batch, and nothing needs escaping. Every value
must then have its column's exact type; ``_columns`` picks each column's encoder
from the type Django gives it, and refuses a type it has no encoder for.
"""

from __future__ import annotations

import functools
import operator
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import db, payload

if TYPE_CHECKING:
    from .models import Job

#: Columns encoded for each job: they are its own, or hold lists and dicts.
#: copy_jobs.sql names them first; the rest are encoded once per distinct set.
OWN_COLUMNS = ("id", "args", "kwargs", "meta", "errors", "result")

#: Rows per chunk handed to the connection; the first is smaller, so that
#: PostgreSQL starts storing rows while the rest are made.
FIRST_CHUNK = 100
CHUNK = 1000

#: The signature, no flags, no header extension; and the end of the data.
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"

Encoder = Callable[[Any], bytes]

_NULL = b"\xff\xff\xff\xff"
_length = struct.Struct(">i").pack
_EMPTY_JSONB = {list: _length(3) + b"\x01[]", dict: _length(3) + b"\x01{}"}
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _fixed(code: str) -> Encoder:
    packed = struct.Struct(">i" + code)
    size = packed.size - 4
    return lambda value: packed.pack(size, value)


def _text(value: str) -> bytes:
    encoded = value.encode()
    return _length(len(encoded)) + encoded


def jsonb(value: Any) -> bytes:
    """A JSON value as a jsonb column (format version 1: the JSON text)."""
    if not value and type(value) in _EMPTY_JSONB:  # most JSON fields of a new job
        return _EMPTY_JSONB[type(value)]
    encoded = payload.dumps(value).encode()
    return _length(len(encoded) + 1) + b"\x01" + encoded


_int8 = _fixed("q")


def _timestamptz(value: datetime) -> bytes:
    """Microseconds since 2000-01-01 UTC."""
    if timezone.is_naive(value):  # USE_TZ = False: local time of TIME_ZONE
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return _int8((value - _POSTGRES_EPOCH) // _MICROSECOND)


#: Encoders by the column type Django creates (``Field.db_type``), up to any "(".
ENCODERS: dict[str, Encoder] = {
    "bigint": _int8,
    "integer": _fixed("i"),
    "smallint": _fixed("h"),
    "double precision": _fixed("d"),
    "boolean": _fixed("?"),
    "varchar": _text,
    "text": _text,
    "timestamp with time zone": _timestamptz,
    "uuid": lambda value: _length(16) + value.bytes,
    "jsonb": jsonb,
}


def nullable(encode: Encoder) -> Encoder:
    """``encode`` for a column that may be NULL (a length of -1, no bytes)."""
    return lambda value: _NULL if value is None else encode(value)


def chunks(jobs: Iterable[Job]) -> Iterator[bytes]:
    """The jobs as COPY data: the header, rows in chunks, the trailer."""
    columns = _columns()
    own, shared = columns[: len(OWN_COLUMNS)], columns[len(OWN_COLUMNS) :]
    shared_values: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(
        *[name for name, _ in shared]
    )
    shared_encoders = [encode for _, encode in shared]
    encoded: dict[tuple[Any, ...], bytes] = {}
    row_start = struct.pack(">h", len(columns))
    chunk: list[bytes] = [HEADER]
    size = FIRST_CHUNK
    for job in jobs:
        values = job.__dict__
        key = shared_values(values)
        tail = encoded.get(key)
        if tail is None:
            tail = encoded[key] = b"".join(
                [encode(value) for encode, value in zip(shared_encoders, key, strict=True)]
            )
        chunk.append(row_start + b"".join([encode(values[name]) for name, encode in own]) + tail)
        if len(chunk) >= size:
            yield b"".join(chunk)
            chunk, size = [], CHUNK
    chunk.append(TRAILER)
    yield b"".join(chunk)


@functools.cache
def _columns() -> list[tuple[str, Encoder]]:
    """copy_jobs.sql's columns as (attname, encoder), in its order, which it says."""
    from django.db import connections

    from .models import Job

    listed = re.search(r"COPY pgjobs_job \(([^)]*)\)", db.statement("copy_jobs"))
    if listed is None:
        raise AssertionError("copy_jobs.sql must name its columns")
    columns = [name.strip() for name in listed.group(1).split(",")]
    if tuple(columns[: len(OWN_COLUMNS)]) != OWN_COLUMNS:
        raise AssertionError(f"copy_jobs.sql must list {OWN_COLUMNS} first")
    by_column = {field.column: field for field in Job._meta.concrete_fields}
    connection = connections[db.alias()]
    layout = []
    for name in columns:
        field = by_column[name]
        db_type = field.db_type(connection).split("(")[0]
        if db_type not in ENCODERS:
            raise TypeError(f"no COPY encoder for column {name} of type {db_type}")
        encode = ENCODERS[db_type]
        layout.append((field.attname, nullable(encode) if field.null else encode))
    return layout
