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


@contextlib.contextmanager
def completed_before_its_update(job_id: int) -> Iterator[None]:
    """Complete job ``job_id`` (as a worker writes it: finished now) just before the
    first UPDATE of the job table runs: as if it completed between the caller's read
    (or question) and its write."""
    done = False

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal done
        if not done and sql.lstrip().upper().startswith('UPDATE "PGJOBS_JOB"'):
            done = True
            # Claimed (the state machine allows no other way), then completed.
            execute(
                "UPDATE pgjobs_job SET state = 'executing', lease = gen_random_uuid(), "
                "attempt = attempt + 1, attempted_at = clock_timestamp() "
                "WHERE id = %s AND state <> 'executing'",
                [job_id],
                False,
                context,
            )
            execute(
                "UPDATE pgjobs_job SET state = 'completed', finished_at = clock_timestamp(), "
                "lease = NULL WHERE id = %s",
                [job_id],
                False,
                context,
            )
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield
    assert done, "no UPDATE of the job table ran"
