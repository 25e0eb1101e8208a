"""Jobs deleted under an operator's action: the row is read, then gone before its UPDATE."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db import connection


@contextlib.contextmanager
def deleted_before_its_update(job_id: int) -> Iterator[None]:
    """Delete job ``job_id`` (a real DELETE, on the same connection) just before the
    first UPDATE of the job table runs: as if an operator or the pruner deleted it
    between the caller's read and its write."""
    done = False

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal done
        if not done and sql.lstrip().upper().startswith('UPDATE "PGJOBS_JOB"'):
            done = True
            execute("DELETE FROM pgjobs_job WHERE id = %s", [job_id], False, context)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield
    assert done, "no UPDATE of the job table ran"
