"""How much of a claimed job's JSON a worker loads: each value within ``limit()`` bytes.

Enqueue refuses arguments over ``MAX_PAYLOAD_BYTES``, but a row written any other way
(SQL, an older version, before the limit was lowered) may hold up to jsonb's 255 MB in
each column, and a claim of up to 1,000 jobs loaded them all: a worker that claimed
such a job could run out of memory, and so could the next after each rescue. So the
claim statements (and the rescue's, the reclaim's) send no value whose stored size is
over the limit, and say which in their ``oversized`` column (sql/claim.sql). A job
without its args, kwargs or meta can't run: the worker discards it at once, saying
why (execution.unrunnable). Its errors and result are not needed to run it: left
out, the job runs.
"""

from __future__ import annotations

import logging
from typing import Any

from . import shown

logger = logging.getLogger(__name__)

#: The JSON columns a claim bounds, in the order of its ``oversized`` sizes.
COLUMNS = ("args", "kwargs", "meta", "errors", "result")

#: Those a job can't run without.
NEEDED_TO_RUN = frozenset({"args", "kwargs", "meta"})

#: What a left-out value is taken for by readers of the job (a worker's own logs).
_EMPTY = {"errors": list, "result": lambda: None}


def limit() -> int:
    """Most bytes a claim loads of one JSON value, as PostgreSQL stores it: what the API
    and the admin show of one as text (``shown.limit``, twice ``MAX_PAYLOAD_BYTES``), so
    that whatever enqueue and workers write is loaded whole. The stored size, not the
    text's: ``pg_column_size`` reads it without loading the value (``octet_length`` of
    the text converts it all, on every claim)."""
    return shown.limit()


def left_out(fields: dict[str, Any], sizes: list[int | None], most: int) -> dict[str, str]:
    """For a claimed job's ``fields`` whose values of ``sizes`` (stored bytes, in
    ``COLUMNS`` order) are over ``most``: set each left-out value to what stands for
    none, and return why for each one the job needs to run, by column."""
    problems = {}
    for column, size in zip(COLUMNS, sizes, strict=True):
        if size is None or size <= most:
            continue
        why = too_large(size, most)
        if column in NEEDED_TO_RUN:
            problems[column] = why
        else:
            fields[column] = _EMPTY[column]()
            logger.warning("job %s: %s: %s", fields.get("id"), column, why)
    return problems


def too_large(size: int, most: int) -> str:
    return (
        f"its JSON is {size:,} bytes stored, over the {most:,} a worker loads "
        "(twice PGJOBS['MAX_PAYLOAD_BYTES']); not loaded"
    )
