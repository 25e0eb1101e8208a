"""Transactions a task left open: found and undone after every job.

A task that runs a raw ``BEGIN``, enters ``atomic()`` without leaving it or
calls ``set_autocommit(False)`` leaves its thread's connection in a
transaction. Nothing it wrote there is committed, and neither is anything the
next jobs on that thread write: they would end ``completed`` with their work
rolled back when the worker stops. So after every job each Django connection
of the job's thread is checked, with attribute reads only, and one that is not
back in autocommit with no transaction open is closed (PostgreSQL rolls back
what was open) and reported, naming its alias, so the job is failed.

An ``async def`` task's ORM calls (``sync_to_async``, ``aget()``...) run on
another thread: each job thread gets one of its own (its "ORM thread") instead
of asgiref's single thread for the whole process, so that its connections can
be checked the same way, and async jobs on different threads don't queue
behind each other's queries.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import queue
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import DatabaseError, connections
from django.db.backends.signals import connection_created

from . import querylog

logger = logging.getLogger(__name__)

#: libpq's (and psycopg's) transaction status codes.
IDLE, ACTIVE, IN_TRANSACTION, IN_ERROR, UNKNOWN = range(5)

#: What a connection was left in, in words, by what gave it away.
LEFT_IN_ATOMIC = "an atomic() block was entered and never exited"
LEFT_WITHOUT_AUTOCOMMIT = "autocommit was turned off (set_autocommit(False)), never back on"
LEFT_IN_TRANSACTION = "a transaction was begun (BEGIN) and never committed"
LEFT_IN_ERROR = "a transaction failed and was never rolled back"
LEFT_ACTIVE = "a statement was still running (a COPY or a result not read to its end)"

_STATUS = {IN_TRANSACTION: LEFT_IN_TRANSACTION, IN_ERROR: LEFT_IN_ERROR, ACTIVE: LEFT_ACTIVE}

Snapshot = dict[str, int]


def snapshot() -> Snapshot:
    """This thread's connections that are in a transaction already (the caller's,
    when jobs run inline: ``testing.drain()`` in a test case, ``POST /jobs/run``
    under ``ATOMIC_REQUESTS``), with how many atomic blocks deep they are.
    Empty on a worker's job thread: the check after each job saw to that."""
    if getattr(_local, "owned", False):
        return _NONE
    return {
        conn.alias: len(conn.atomic_blocks)
        for conn in connections.all(initialized_only=True)
        if _left_open(conn) is not None
    }


_NONE: Snapshot = {}


def own_this_thread() -> None:
    """Mark this thread as one that only runs jobs (a worker's job thread): its
    connections are clean before each job, so ``snapshot`` needn't look, and
    ``tidy`` looks only at those that connected on it (``_opened``)."""
    _local.owned = True
    _local.opened = []


def _opened(sender: object, connection: Any, **kwargs: object) -> None:
    """``connection_created`` receiver: remember each connection an owned thread
    opens. ``connections.all(initialized_only=True)`` reads asgiref's Local twice
    per alias, each read an exception raised and caught in a sync thread: 1.8 us of
    a job's ~30 us of worker CPU, after every job. A connection that never
    connected on the thread has nothing open, and one made on another thread can't
    be used on it (Django refuses), so these are all ``tidy`` must look at."""
    opened = getattr(_local, "opened", None)
    if opened is not None and not any(conn is connection for conn in opened):
        opened.append(connection)


connection_created.connect(_opened, dispatch_uid="django_pgjobs.leftovers")


def _this_threads_connections() -> list[Any]:
    opened = getattr(_local, "opened", None)
    return connections.all(initialized_only=True) if opened is None else opened


def tidy(before: Snapshot) -> dict[str, str]:
    """Close what the task left open on this thread's connections since ``before``,
    and the connections it left broken; returns ``{alias: what was left open}``
    (empty when all is well). One pass: this runs after every job."""
    found = {}
    for conn in _this_threads_connections():
        try:
            if conn.alias in before:
                what = _exit_blocks_opened_since(conn, before[conn.alias])
            else:
                what = _left_open(conn)
                if what is not None:
                    _discard(conn)
                elif conn.errors_occurred:
                    _drop_if_broken(conn)
        except Exception:  # never let the check itself fail a worker thread
            logger.exception("could not clean up database connection %r", conn.alias)
            continue
        if what:
            found[conn.alias] = what
    return found


def drop_broken() -> None:
    """Close this thread's connections that are broken; keep healthy ones."""
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            _drop_if_broken(conn)


def drop_ended() -> None:
    """Close this thread's connections that the server ended while they sat idle
    between jobs (``idle_session_timeout``, ``pg_terminate_backend``, a restart): the
    next job's first query failed on one, its attempt counted, and a job on its last
    attempt was discarded unrun. Costs a poll of each socket per job; a query only on
    a socket the server wrote to unasked; on a job thread, only of the connections it
    opened (``_opened``: 0.1 us, against connections.all's 1.4 us per job)."""
    for conn in _this_threads_connections():
        if conn.connection is not None and not conn.in_atomic_block and _spoken_to(conn):
            _drop_if_broken(conn)


def _spoken_to(conn: Any) -> bool:
    """Whether the server sent something on ``conn``'s idle socket (or it is closed):
    on a connection that listens to nothing, its last words as it ended the session
    (an error message, then end of file)."""
    raw = conn.connection
    if getattr(raw, "closed", False):
        return True
    try:
        fileno = raw.fileno
    except AttributeError:
        return False  # no socket to look at (another driver): as before
    try:
        # poll, not select: select refuses a descriptor above 1,023, which a worker of
        # many threads and connections reaches, and every job would then pay a query.
        poller = select.poll()
        poller.register(fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # a driver's error for a socket it lost: is_usable() tells
        return True


def _drop_if_broken(conn: Any) -> None:
    """Close ``conn`` if an error left it unusable. Unlike Django's
    close_old_connections this ignores CONN_MAX_AGE=0, which would otherwise
    reconnect once per job."""
    if conn.connection is None:
        return
    try:
        usable = conn.is_usable()
    except DatabaseError:
        usable = False
    if usable:
        conn.errors_occurred = False
    else:
        conn.close()


def _left_open(conn: Any) -> str | None:
    """What ``conn`` was left in, or None if it is in autocommit with nothing open."""
    if conn.connection is None:
        return None
    if conn.in_atomic_block:
        return LEFT_IN_ATOMIC
    if not conn.autocommit:
        return LEFT_WITHOUT_AUTOCOMMIT
    status = _transaction_status(conn.connection)
    if status == UNKNOWN:
        return ""  # broken, not left open: closed without blaming the task
    return _STATUS.get(status)


def _transaction_status(raw: Any) -> int:
    pgconn = getattr(raw, "pgconn", None)  # psycopg 3, read straight off libpq
    if pgconn is not None:
        return pgconn.transaction_status
    info = getattr(raw, "info", None)  # psycopg2
    if info is not None:
        return info.transaction_status
    return IN_TRANSACTION if getattr(raw, "in_transaction", False) else IDLE  # sqlite3


def _discard(conn: Any) -> None:
    """Close ``conn`` and forget its transaction; the next use reconnects.

    Closing ends the server session, so PostgreSQL rolls back whatever was
    open, whatever state it was in. Django's bookkeeping of atomic blocks is
    reset first: closed inside one, Django would refuse to reconnect.
    """
    conn.in_atomic_block = False
    conn.atomic_blocks = []
    conn.savepoint_ids = []
    conn.needs_rollback = False
    conn.closed_in_transaction = False
    conn.close()  # also drops on_commit callbacks: they will never run


def _exit_blocks_opened_since(conn: Any, depth: int) -> str | None:
    """Roll back atomic blocks entered since the caller's ``depth`` and left open,
    innermost first, as an exception leaving them would."""
    extra = conn.atomic_blocks[depth:]
    if not extra:
        return None
    error = RuntimeError("atomic() block left open by a task")
    for block in reversed(extra):
        block.__exit__(RuntimeError, error, None)
    return LEFT_IN_ATOMIC


# -- the job thread's thread for ORM calls of async tasks ---------------------------------


class _OneThread(concurrent.futures.Executor):
    """A single daemon thread, started on first use, that runs what is submitted in order.

    Not a ThreadPoolExecutor: interpreter shutdown joins those, so an ORM call
    that hangs in an abandoned job would keep a stopping worker alive.
    """

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future, Callable[[], Any]] | None]
        self._work = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._lock = threading.Lock()
        self.started = False

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((future, functools.partial(fn, *args, **kwargs)))
        with self._lock:
            if not self.started:
                self.started = True
                self._thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._work.put(None)
        if wait and self.started:
            self._thread.join()

    def _serve(self) -> None:
        try:
            while (item := self._work.get()) is not None:
                future, call = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(call())
                    except BaseException as error:
                        future.set_exception(error)
        finally:
            connections.close_all()


_local = threading.local()

#: Seconds a job thread waits for its ORM thread to check its connections after an
#: async job. Still busy by then, it runs a call the task left behind (one that a
#: timeout or cancellation could not stop): it is left to it, and replaced.
ORM_THREAD_PATIENCE = 5.0


def _orm_thread() -> tuple[ThreadSensitiveContext, _OneThread]:
    found = getattr(_local, "orm", None)
    if found is None:
        key = ThreadSensitiveContext()
        executor = _OneThread(f"{threading.current_thread().name}-orm")
        # What ThreadSensitiveContext(executor=...) does in recent asgiref, by hand
        # for the older ones: sync_to_async calls in this context use our thread.
        SyncToAsync.context_to_thread_executor[key] = executor
        found = _local.orm = (key, executor)
    return found


@contextmanager
def orm_calls_on_this_threads_executor() -> Iterator[None]:
    """While the block runs, async tasks created in it send their
    ``sync_to_async`` calls (the async ORM) to this thread's own ORM thread."""
    key, _ = _orm_thread()
    token = SyncToAsync.thread_sensitive_context.set(key)
    try:
        yield
    finally:
        SyncToAsync.thread_sensitive_context.reset(token)


def tidy_orm_thread() -> dict[str, str]:
    """``tidy`` on this thread's ORM thread, if an async task used it (and its query
    log emptied)."""
    found = getattr(_local, "orm", None)
    if found is None or not found[1].started:
        return {}
    try:
        return found[1].submit(_tidy_after_async_job).result(ORM_THREAD_PATIENCE)
    except concurrent.futures.TimeoutError:
        logger.warning(
            "%s is still busy after its async job ended; leaving it to that call",
            found[1]._thread.name,
        )
        release_orm_thread()
        return {}


def _tidy_after_async_job() -> dict[str, str]:
    """On an ORM thread after each async job: ``tidy``, and its query log emptied, as
    its job thread's is before each job (querylog.py), not between the job's calls."""
    left = tidy({})
    querylog.forget()
    return left


def release_orm_thread() -> None:
    """Close the connections of this thread's ORM thread and stop it (the job
    thread is exiting)."""
    found = getattr(_local, "orm", None)
    if found is not None:
        _local.orm = None
        SyncToAsync.context_to_thread_executor.pop(found[0], None)
        found[1].shutdown(wait=False)
