"""A running job's connector: loaded, given a concurrency slot, handed to the task.

The hook in ``execution.call_task`` is ``attached(context)`` around the call and
``injected(func, context)`` for its keyword arguments.

Concurrency across workers: a connector with ``concurrency = N`` has N slots, rows
of ``ConnectorSlot``. A job takes one (sql/connector_take_slot.sql) before its task
runs and deletes its row after (sql/connector_release_slot.sql); a slot whose row
names a job no longer executing under that lease is free, so a worker that dies
gives its slots back when its jobs are rescued. No session state (locks, prepared
statements): it holds behind PgBouncer in transaction mode. No free slot:
``ConnectorBusy``, and ``execution`` puts the job back (``transitions.snooze``) to
try again ``CONNECTOR_BUSY_DELAY`` seconds later, its attempt not counted.

A connector's rate limit is taken at the same moment, once the slot is held
(``ratelimits.take``); a full window snoozes the job until it has room again.

Backpressure: when the service answers 429 or 503 with a Retry-After, the http
connector sets the row's ``throttled_until`` (sql/throttle_connector.sql) and
snoozes its job (``throttle_again`` writes it once more after the task: its own
transaction may have rolled the first back); every job that takes the connector
before then is snoozed until then too, before it takes a slot. No attempt is counted.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from .. import conf, db, ratelimits
from ..context import JobContext
from ..exceptions import Snooze
from .errors import ConnectorBusy, ConnectorThrottled

logger = logging.getLogger(__name__)

#: Advisory lock keys (transaction-level) of slot takers: this namespace in the top
#: 16 bits ("pj"), the connector id in the next 32, zero in the last 16.
LOCK_NAMESPACE = 0x706A << 48
MAX_SLOTS = 0xFFFF


def lock_key(connector_id: int) -> int:
    """The key of ``connector_id``'s slot takers: a bigint whatever the id. Its low 32
    bits, so that an id past them (a row written by SQL, a sequence restarted high)
    makes no key past a bigint, which failed each of its jobs' attempts with a
    ProgrammingError; connectors whose ids share those bits only take turns."""
    return LOCK_NAMESPACE + ((connector_id & 0xFFFF_FFFF) << 16)


def take_slot(
    connector_id: int, slots: int, job_id: int, lease: Any, using: str | None = None
) -> int | None:
    """The slot now held by job ``job_id`` under ``lease``, or None if all are taken."""
    using = using or conf.get("DATABASE")
    with transaction.atomic(using=using):
        db.fetch_dicts("connector_lock_slots", {"key": lock_key(connector_id)}, using)
        rows = db.fetch_dicts(
            "connector_take_slot",
            {
                "connector": connector_id,
                "slots": min(slots, MAX_SLOTS),
                "job": job_id,
                "lease": lease,
            },
            using,
        )
    return rows[0]["slot"] if rows else None


def release_slot(connector_id: int, slot: int, lease: Any, using: str | None = None) -> None:
    """Give back the slot ``take_slot`` gave, if it still names ``lease``."""
    params = {"connector": connector_id, "slot": slot, "lease": lease}
    try:
        deleted = db.execute("connector_release_slot", params, using)
    except DatabaseError as error:
        # The slot frees itself once the job no longer executes under this lease.
        logger.warning("could not release slot %s of connector %s: %s", slot, connector_id, error)
        return
    if not deleted:
        logger.warning("slot %s of connector %s was no longer held", slot, connector_id)


@contextmanager
def attached(context: JobContext) -> Iterator[None]:
    """Load the job's connector into ``context.connector`` and hold a slot meanwhile."""
    from .store import build, load

    name = context.job.connector
    if not name:
        yield
        return
    using = conf.get("DATABASE")
    stored = load(name, using)
    resolved = build(stored)  # before the slot: a misconfigured connector holds none
    _wait_if_throttled(stored)
    job = context.job
    slot = (
        take_slot(stored.pk, stored.concurrency, job.pk, job.lease, using)
        if stored.concurrency
        else None
    )
    if stored.concurrency and slot is None:
        raise ConnectorBusy(name, conf.get("CONNECTOR_BUSY_DELAY"))
    try:
        if stored.rate_limit is not None:  # a start under it: after the slot, never wasted
            _start_under_rate_limit(stored, using)
        context.connector = resolved
        yield
    finally:
        if slot is not None:
            release_slot(stored.pk, slot, job.lease, using)


def throttle_again(snooze: Snooze) -> None:
    """If ``snooze`` is a connector's ``ConnectorThrottled``, write its throttle again,
    once the task is done and its connections tidied: the one written when the service
    answered is undone if the task's own transaction rolls back as the exception
    leaves it, and every other job would call the service on (a later deadline
    already written stays). Of the connector that answered, whether or not the job
    names it: a task may load one itself (``get_connector``). Until the Retry-After
    counted from the answer is over, not from now: the task may have held it."""
    from .http import throttle

    if not isinstance(snooze, ConnectorThrottled):
        return
    remaining = snooze.remaining()
    if remaining <= 0:
        return  # over already: the service may be called again
    try:
        throttle(snooze.connector, remaining)
    except DatabaseError as error:  # the job is snoozed all the same
        logger.warning("could not throttle connector %s: %s", snooze.connector, error)


def _wait_if_throttled(stored: Any) -> None:
    """``ConnectorBusy`` until the instant the service asked for, if it asked for one
    still ahead (``throttled_until``, by the database's clock: read with the row, it
    is compared with this host's clock, which the worker keeps near it). One further
    ahead than any answer sets (written by SQL) is looked at again after the longest
    Retry-After obeyed: a wait past the year a snooze may last failed the job."""
    from .http import MAX_RETRY_AFTER

    until = stored.throttled_until
    if until is None:
        return
    wait = (until - timezone.now()).total_seconds()
    if wait > 0:
        raise ConnectorBusy(
            stored.name,
            min(wait, MAX_RETRY_AFTER),
            f"is throttled until {until.isoformat(timespec='seconds')}",
        )


def _start_under_rate_limit(stored: Any, using: str) -> None:
    """Take a start of the connector's rate limit; ``ConnectorBusy`` until its window
    has room again if it is full."""
    scope = ratelimits.connector_scope(stored.name)
    taken = ratelimits.take(scope, stored.rate_limit, stored.rate_period, using)
    if taken.at is None:
        limit = ratelimits.describe(stored.rate_limit, stored.rate_period)
        raise ConnectorBusy(stored.name, taken.wait, f"is at its rate limit ({limit})")


def injected(func: Callable[..., Any], context: JobContext) -> dict[str, Any]:
    """``{"connector": ...}`` for tasks that take a ``connector`` parameter."""
    if context.connector is None or "connector" in context.job.kwargs:
        return {}
    return {"connector": context.connector} if _takes_connector(func) else {}


@functools.cache
def _takes_connector(func: Callable[..., Any]) -> bool:
    try:
        parameter = inspect.signature(func).parameters.get("connector")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
