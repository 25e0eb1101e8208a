"""Jobs that wait for other jobs.

A job with dependencies is inserted ``waiting`` with ``pending_dependencies``
set to the number of them not completed yet, plus one edge row per
dependency. Releasing happens in the database: when a job finishes, a trigger
(migration ``pipelines``) counts it off its dependents' counters in one
UPDATE, so two dependencies finishing at the same moment serialise on the
dependent's row and exactly one of them releases it, with no scan of the jobs
table. A dependency that is discarded or cancelled cancels its dependents,
unless they were enqueued with ``on_dependency_failure="run"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import db, payload
from .exceptions import PgJobsError, UnrunnableJob
from .limits import shown
from .states import JobState

if TYPE_CHECKING:
    from .models import Job

ON_FAILURE = ("cancel", "run")
FAILED = {JobState.DISCARDED, JobState.CANCELLED}


class UnknownDependency(PgJobsError, LookupError):
    def __init__(self, ids: Iterable[int]) -> None:
        super().__init__(f"depends_on names job(s) that don't exist: {sorted(ids)}")


def job_ids(depends_on: Sequence[Job | int]) -> list[int]:
    """The ids ``depends_on`` names; TypeError for anything but a list of saved jobs or
    ids from 1 to 2**63-1. A string was read as its characters ("12" said "not '1'"),
    and an id alone raised "'int' object is not iterable"."""
    if isinstance(depends_on, str | bytes) or not isinstance(depends_on, Iterable):
        if isinstance(depends_on, str | bytes):
            given = f"the string {shown(depends_on)}"
        else:
            given = f"{shown(depends_on)} ({type(depends_on).__name__})"
        raise TypeError(f"depends_on must be a list of saved jobs or job ids, not {given}")
    ids = []
    for item in depends_on:
        job_id = item if isinstance(item, int) else getattr(item, "pk", None)
        if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 < job_id < 2**63:
            raise TypeError(f"depends_on takes saved jobs or job ids, not {shown(item)}")
        ids.append(job_id)
    return sorted(set(ids))


def lock(ids: list[int], using: str) -> dict[int, str]:
    """States of the dependencies, locked against finishing until we commit."""
    if not ids:
        return {}
    states = {
        row["id"]: row["state"] for row in db.fetch_dicts("lock_dependencies", {"ids": ids}, using)
    }
    missing = set(ids) - set(states)
    if missing:
        raise UnknownDependency(missing)
    return states


def initial_state(job: Job, states: dict[int, str], now: datetime) -> None:
    """Set a new job's state from its dependencies' states (before insert)."""
    # One pass, no list searched per dependency: "pending not in failed" searched the
    # list of failed ones for each, and 64,000 failed dependencies of a job that runs
    # anyway (on_dependency_failure="run") took 21 s to enqueue, 8,000 took 0.5 s.
    failed = [job_id for job_id, state in states.items() if state in FAILED]
    unfinished = [
        job_id
        for job_id, state in states.items()
        if state != JobState.COMPLETED and state not in FAILED
    ]
    policy = job.meta.get("on_dependency_failure", "cancel")
    if failed and policy == "cancel":
        job.state = JobState.CANCELLED
        job.finished_at = now
        job.errors = [
            {
                "attempt": 0,
                "at": now.isoformat(),
                "error": f"DependencyFailed: job {failed[0]} ended {states[failed[0]]}",
                "traceback": "",
            }
        ]
        return
    job.pending_dependencies = len(unfinished)
    if unfinished:
        job.state = JobState.WAITING


def edges_for(job: Job, states: dict[int, str]) -> list[Any]:
    """Edge rows for a saved job; already finished dependencies are satisfied edges."""
    from .models import JobDependency

    return [
        JobDependency(job=job, depends_on_id=dep_id, satisfied=state in {*FAILED, "completed"})
        for dep_id, state in states.items()
    ]


def results_of_dependencies(job: Job) -> list[Any]:
    """Results of ``job``'s dependencies in dependency-id order (for gather jobs).

    A result Python can't read back (written by SQL: an integer of 5,000 digits, a
    decimal past a float's range) is ``UnrunnableJob``, which discards the job at once:
    json's own ValueError or RecursionError failed every attempt, and the decimal was
    passed as infinity."""
    rows = db.fetch_dicts("dependency_results", {"job_id": job.pk}, job._state.db)
    results = []
    for row in rows:
        # Django's connections hand jsonb over as text.
        result = payload.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
        if isinstance(result, payload.Unreadable):
            which = f"the result of job {row['id']}, which it depends on"
            raise UnrunnableJob(job.pk, f"{which}: {result.problem}")
        results.append(result)
    return results


def extend_dependents(job: Job, new_jobs: Sequence[Job]) -> None:
    """Make whatever waits for ``job`` also wait for ``new_jobs`` (same transaction)."""
    db.execute(
        "extend_dependents",
        {"job_id": job.pk, "new_ids": [new.pk for new in new_jobs]},
        job._state.db,
    )
