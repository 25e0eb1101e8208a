"""A process's view of a database outage: one line when it begins, one when it ends.

Every thread of a worker or scheduler that meets a lost connection (its loop, its
heartbeat, its LISTEN connection, its outcome writes, its event publisher) retries on
its own. Each used to log every retry: a server restart of a few seconds made some
thirty warnings per worker, most of them three lines long (libpq's hints). They report
here instead: the first failure per database alias is a warning, the others are
DEBUG (with a reminder every ``REMIND_EVERY`` seconds while it lasts), and the first
success after it says the database is back and how long it was away. That success
also ends the waits of the other threads' retries (``pause``), so a worker claims,
writes and publishes again as soon as one of its connections got through, not at the
end of each thread's own backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import psycopg

logger = logging.getLogger(__name__)

#: Seconds between the warnings that the database is still unreachable (and that
#: connections keep being lost).
REMIND_EVERY = 60.0
#: Connections lost within REMIND_EVERY that make a warning. One terminated session is
#: routine (idle_session_timeout, a cleanup ending every session of a database, a
#: server restart or failover: a worker loses its five or so at once, and the restart
#: is said as an outage); sessions ended again and again are not, and each was said at
#: DEBUG only.
LOST_OFTEN = 20


@dataclass
class _State:
    since: float | None = None  # time.monotonic() of the first failure, while it lasts
    reminded_at: float = 0.0
    failures: int = 0
    #: Goes up when the database answered again, or a retry should be tried now.
    generation: int = 0
    #: When connections were lost (not refused) within the last REMIND_EVERY seconds.
    lost: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    lost_said_at: float = float("-inf")


_lock = threading.Lock()
_changed = threading.Condition(_lock)
_states: dict[str, _State] = {}


def _state(alias: str) -> _State:
    state = _states.get(alias)
    if state is None:
        with _lock:
            state = _states.setdefault(alias, _State())
    return state


def describe(error: BaseException) -> str:
    """The error's first line: libpq adds hints on lines of their own ("Is the server
    running on that host...")."""
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def unreachable(alias: str, error: BaseException) -> None:
    """A statement on database ``alias`` failed for want of a connection; the caller
    retries. A connection lost while the server still takes new ones (terminated, or
    one opened before a restart and used after it) is no outage: it is said at DEBUG,
    and the caller's retry reconnects. A connection refused is: said once. An error
    the server sent about the statement itself (a read-only standby after a failover, a
    statement_timeout, a full disk) is neither, and retrying may never get past it: a
    warning each time, as before this module (at DEBUG, a worker that could claim
    nothing, or a completer retrying its outcomes for ever, left nothing in the log)."""
    if is_statement_error(error):
        logger.warning("database %r: %s; retrying", alias, describe(error))
        return
    state = _state(alias)
    now = time.monotonic()
    refused = is_refused(error)
    with _lock:
        first = refused and state.since is None
        if first:
            state.since = state.reminded_at = now
        if state.since is not None:
            state.failures += 1
        remind = not first and state.since is not None and now - state.reminded_at >= REMIND_EVERY
        if remind:
            state.reminded_at = now
        since = state.since
    if first:
        logger.warning(
            "database %r unreachable (%s); retrying until it answers",
            alias,
            describe(error),
        )
    elif remind and since is not None:
        logger.warning(
            "database %r still unreachable after %.0fs (%s)", alias, now - since, describe(error)
        )
    else:
        logger.debug("database %r: %s; retrying", alias, describe(error))
        if not refused:
            lost(alias, error)


def lost(alias: str, error: BaseException) -> None:
    """A connection to database ``alias`` was lost while the server takes new ones (the
    caller reconnects, and said it at DEBUG): a warning once LOST_OFTEN were lost
    within REMIND_EVERY seconds, then at most once every REMIND_EVERY while it goes on.
    Nothing while the database is held unreachable (``is_down``): that is an outage,
    said as one."""
    state = _state(alias)
    now = time.monotonic()
    with _lock:
        if state.since is not None:
            return
        state.lost.append(now)
        while now - state.lost[0] > REMIND_EVERY:
            state.lost.popleft()
        count = len(state.lost)
        say = count >= LOST_OFTEN and now - state.lost_said_at >= REMIND_EVERY
        if say:
            state.lost_said_at = now
        within = now - state.lost[0]
    if say:
        logger.warning(
            "database %r: %d connection(s) of this process lost in the last %.0fs, each"
            " reopened (the latest: %s); something keeps ending its sessions"
            " (pg_terminate_backend, idle_session_timeout, a pooler or proxy between);"
            " said at most once every %.0fs while it goes on",
            alias,
            count,
            within,
            describe(error),
            REMIND_EVERY,
        )


#: How psycopg begins the errors of a connection attempt (its connect generator), and
#: those only: libpq's own text follows, which also names "connection to server" on
#: a connection lost after it was made.
CONNECT_FAILED = ("connection failed: ", "connection is bad: ")


def is_refused(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is a connection that could not be made:
    refused, timed out, or turned away ("the database system is starting up"). Told
    by psycopg's class and the prefix it gives a failed connection attempt, not by
    libpq's words: a connection that was made and then lost is no refusal."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.errors.ConnectionTimeout):
            return True
        if isinstance(seen, psycopg.OperationalError) and str(seen).startswith(CONNECT_FAILED):
            return True
        seen = seen.__cause__
    return False


def answered(error: BaseException) -> BaseException | None:
    """The error in ``error`` or what it wraps (Django's errors wrap psycopg's, their
    ``__cause__``) that carries the SQLSTATE the server sent; None if none does (an
    error of the client's own: a lost connection, libpq's)."""
    seen: BaseException | None = error
    while seen is not None:
        if getattr(seen, "sqlstate", None):
            return seen
        seen = seen.__cause__
    return None


def is_statement_error(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is the server's answer to a statement: a
    SQLSTATE outside connection exceptions (08) and operator intervention (57P: shut
    down, terminated, starting up). A lost connection has none (libpq's own error)."""
    sent = answered(error)
    return sent is not None and not sent.sqlstate.startswith(("08", "57P"))


def reachable(alias: str, began: float) -> None:
    """A statement on database ``alias`` begun at ``began`` (``time.monotonic()``)
    succeeded on a new connection: if the database was unreachable, say it is back,
    and end the waits in ``pause``. Callers say so only after their own attempt failed
    and they closed its connection. A statement on a connection made before, or begun
    before the outage was noticed, proves nothing: a fast shutdown refuses new
    connections while sessions under way still finish their statements."""
    state = _states.get(alias)
    if state is None or state.since is None or began < state.since:
        return
    with _lock:
        since = state.since
        if since is None or began < since:  # another thread said so meanwhile
            return
        state.since = None
        failures, state.failures = state.failures, 0
        state.generation += 1
        _changed.notify_all()
    logger.warning(
        "database %r reachable again after %.1fs (%d failed attempt(s) meanwhile)",
        alias,
        time.monotonic() - since,
        failures,
    )


def retry_now(alias: str) -> None:
    """End the waits in ``pause`` for ``alias`` (a LISTEN connection on another alias
    of the same server got through)."""
    state = _state(alias)
    with _lock:
        state.generation += 1
        _changed.notify_all()


def generation(alias: str) -> int:
    """What ``pause(since=)`` compares: taken as an attempt begins, it lets the pause
    after it fail end at once if another thread got through meanwhile."""
    return _state(alias).generation


def pause(
    alias: str, seconds: float, stop: threading.Event | None = None, since: int | None = None
) -> None:
    """Wait ``seconds`` before retrying on ``alias``; less once the database answered
    another thread meanwhile, or ``stop`` is set. Meanwhile is from ``since`` (a
    ``generation`` taken as the failed attempt began), else from now: a thread that
    got through while the attempt was under way was missed, and the pause waited out
    its ``seconds``."""
    state = _state(alias)
    deadline = time.monotonic() + seconds
    with _lock:
        generation = state.generation if since is None else since
        while state.generation == generation and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _changed.wait(min(left, 0.25))


def spread(seconds: float, draw: float | None = None) -> float:
    """``seconds`` brought down to between half of it and all of it by ``draw`` in
    [0, 1) (by default ``random.random()``): every process of a fleet loses the server at the same
    moment, and retries of a fixed length keep them in step, so they would meet a
    server coming back all at once (see notifier.reconnect_delay, measured there)."""
    return seconds * (0.5 + (random.random() if draw is None else draw) / 2)


class Doubling:
    """The wait before a retry: ``first`` seconds after the first failure, twice as
    long after each next one, up to ``cap``; ``reset`` once a try went through. Shared
    by the retries of a worker's and a scheduler's own steps (a claim, an outcome, a
    hand-back, a pass of a loop), which each wrote it out; not the jobs' retry policy
    (backoff.Backoff). Spreading the wait (``spread``) is the caller's."""

    def __init__(self, cap: float, first: float = 0.1) -> None:
        self.first = first
        self.cap = cap
        #: Seconds to wait after the next failure.
        self.delay = first
        #: Failures since the last reset.
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the seconds to wait before trying again."""
        delay = self.delay
        self.failures += 1
        self.delay = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """A try went through: the next failure waits ``first`` again."""
        self.delay = self.first
        self.failures = 0


def down_for(alias: str) -> float:
    """Seconds since this process found database ``alias`` unreachable; 0.0 if it
    does not hold it so."""
    state = _states.get(alias)
    since = state.since if state is not None else None
    return 0.0 if since is None else max(0.0, time.monotonic() - since)


def is_down(alias: str) -> bool:
    """Whether this process holds database ``alias`` unreachable: a connection was
    refused and nothing has got through since (what ``pause`` waits out)."""
    state = _states.get(alias)
    return state is not None and state.since is not None
