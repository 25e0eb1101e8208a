"""The job state machine, declared once.

Every state change in the project goes through a function in ``transitions``
that checks it against ``ALLOWED``; the same table is turned into a database
CHECK constraint on the state column and into the documentation diagram.
"""

from __future__ import annotations

from django.db import models

from .pickling import PickledWhole


class JobState(models.TextChoices):
    WAITING = "waiting", "Waiting"  # dependencies unmet
    SCHEDULED = "scheduled", "Scheduled"  # run_at in the future
    AVAILABLE = "available", "Available"
    EXECUTING = "executing", "Executing"
    RETRYABLE = "retryable", "Retryable"  # failed, runs again at run_at
    COMPLETED = "completed", "Completed"
    DISCARDED = "discarded", "Discarded"  # attempts exhausted or unrecoverable
    CANCELLED = "cancelled", "Cancelled"


S = JobState

#: from-state -> states it may move to.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.WAITING: frozenset({S.AVAILABLE, S.SCHEDULED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.AVAILABLE, S.EXECUTING, S.CANCELLED}),
    S.AVAILABLE: frozenset({S.EXECUTING, S.SCHEDULED, S.CANCELLED}),
    # executing -> available is a hand-back on shutdown, executing -> scheduled a
    # snooze (the job could not start yet); neither counts the attempt.
    S.EXECUTING: frozenset(
        {S.COMPLETED, S.RETRYABLE, S.DISCARDED, S.CANCELLED, S.AVAILABLE, S.SCHEDULED}
    ),
    S.RETRYABLE: frozenset({S.EXECUTING, S.AVAILABLE, S.CANCELLED, S.DISCARDED}),
    # Finished jobs can be retried by an operator.
    S.COMPLETED: frozenset({S.AVAILABLE}),
    S.DISCARDED: frozenset({S.AVAILABLE}),
    S.CANCELLED: frozenset({S.AVAILABLE}),
}

#: States a worker may claim from (once run_at has passed).
CLAIMABLE: frozenset[JobState] = frozenset({S.AVAILABLE, S.SCHEDULED, S.RETRYABLE})
#: States a job never leaves on its own.
FINISHED: frozenset[JobState] = frozenset({S.COMPLETED, S.DISCARDED, S.CANCELLED})
#: States an operator's retry ("run it again now") applies to. Not executing
#: (that would be a second run beside the first) and not waiting (its
#: dependencies decide).
RETRY_FROM: frozenset[JobState] = FINISHED | {S.SCHEDULED, S.RETRYABLE}
#: States in which the job still has work ahead of it.
ACTIVE: frozenset[JobState] = frozenset(set(JobState) - FINISHED)


class InvalidTransition(PickledWhole, Exception):
    """A state change that the state machine does not allow."""

    def __init__(self, job_id: int | None, from_state: str, to_state: str) -> None:
        self.job_id, self.from_state, self.to_state = job_id, from_state, to_state
        # As stored: the repr of a JobState is "JobState.AVAILABLE".
        said = [repr(str(state)) for state in (from_state, to_state)]
        super().__init__(f"job {job_id}: cannot go from {said[0]} to {said[1]}")


def can_transition(from_state: str, to_state: str) -> bool:
    return JobState(to_state) in ALLOWED[JobState(from_state)]


def sources_of(to_state: JobState) -> list[str]:
    """States from which ``to_state`` can be reached, as plain strings (for SQL)."""
    return sorted(str(src) for src, targets in ALLOWED.items() if to_state in targets)
