"""A claim that outlives its worker's connection: which server backend runs it, and
making sure that backend is over before the worker looks for what it claimed.

A worker's client can give up on a connection while the backend serving it is still
at work: a partition ends the client's side (keepalives, ``tcp_user_timeout``, a
reset from a NAT or load balancer) and nothing tells the server. A claim that backend
is running (waiting on a lock, in the COMMIT of a rate-limited claim waiting on a
synchronous standby) commits when it gets there, and its jobs are then executing
under a live worker that never got them. The loop's hand-back of a lost claim's jobs
(sql/hand_back_unheld.sql) can't see them before that: their rows are locked, and
still available. Once the backend committed, only ``reclaim_forgotten`` took them
back, a minute or more later, counting an attempt none of them made: a job on its
last was discarded without having run.

So the worker's loop learns which backend serves its connection, once per connection
(``serving``), and once it lost one, ends that backend and waits until it is gone
before its hand-back (``end``). A claim the backend had not committed is rolled back
(its jobs, and the starts it wrote in a rate limit's window, with it); one it had is
found by the hand-back, its jobs given back uncounted.

A backend is told by its pid and its start: a pid alone may be another backend's by
then. Behind a pooler (PgBouncer) the pid a connection reports is the pooler's own,
not a server backend's, which is told by asking the server for its own: then the
backend is not ours to end (the pooler's server connection, whichever client it
serves next), and nothing is ended. The loop then hands back for a while instead
(see Worker._hand_back_unheld).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import ProgrammingError, connections

from . import db

logger = logging.getLogger(__name__)

#: Most seconds ``end`` waits for a backend it told to end to be gone (usually a few
#: milliseconds: a backend acts on the signal at its next check for interrupts).
END_WAIT = 5.0


@dataclass(frozen=True)
class Backend:
    """A server backend: ``pid`` and ``started`` (its backend_start) tell it from any
    other. ``pooled``: the connection goes through a pooler, whose server connections
    are no worker's to end."""

    pid: int
    started: datetime
    pooled: bool = False


def serving(using: str) -> Backend | None:
    """The backend serving the connection of this thread to ``using`` (made if need
    be), None if the server doesn't say. One round trip: once per connection."""
    connection = connections[using]
    connection.ensure_connection()
    reported = connection.connection.info.backend_pid  # from the startup, not the server
    rows = db.fetch_dicts("backend", {}, using)
    if not rows:
        return None
    row = rows[0]
    return Backend(row["pid"], row["started"], pooled=row["pid"] != reported)


def end(backend: Backend, using: str, wait: float = END_WAIT) -> bool:
    """Whether ``backend`` is gone, its transaction over: ended here if it still ran
    (waiting up to ``wait`` seconds for it to go), or gone by itself. False behind a
    pooler, and while a backend this role may not end lives on."""
    if backend.pooled:
        return False
    params = {"pid": backend.pid, "started": backend.started, "terminate": True}
    try:
        rows = db.fetch_dicts("end_backend", params, using)
    except ProgrammingError as error:  # not allowed to end it: see whether it ended
        logger.warning("could not end backend %s: %s", backend.pid, error)
        params["terminate"] = False
        return not db.fetch_dicts("end_backend", params, using)
    if not rows:
        return True
    state = rows[0]["state"]
    # An idle backend has nothing to commit, unless the rest of a claim reaches it yet.
    (logger.info if state == "idle" else logger.warning)(
        "the backend of a connection this worker lost (pid %s) was still %s: ended it, "
        "so that a claim it had not committed rolls back",
        backend.pid,
        state,
    )
    params["terminate"] = False
    deadline = time.monotonic() + wait
    while db.fetch_dicts("end_backend", params, using):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
