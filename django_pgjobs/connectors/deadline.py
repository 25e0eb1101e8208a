"""One deadline for a whole exchange with a peer: an HTTP request (looking up the host's
name, connecting, TLS, sending, reading the answer), an SMTP session.

A socket's timeout bounds each operation alone: a peer that sends a byte a second
never lets one read wait long, and held a job as long as it liked. So the
connections of an exchange register their sockets here, and when its time is up
they are shut down, which wakes the read blocked on them with end of file. What
has no socket to shut (the system resolver's lookup of a name) runs on a thread of
its own, which the exchange stops waiting for when its time is up.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
AddressInfo = tuple[Any, Any, int, str, Any]

_current: ContextVar[Deadline | None] = ContextVar("pgjobs_http_deadline", default=None)


class Deadline:
    """The end of one request's time; ``expired`` once its sockets were shut down."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def remaining(self) -> float:
        return max(self.ends - time.monotonic(), 0.0)

    def watch(self, sock: socket.socket) -> None:
        # A duplicate of its descriptor: TLS wraps a socket by detaching it, after which
        # shutting the object down did nothing, and a STARTTLS handshake ran on for the
        # socket's own timeout.
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        with self.lock:
            if self.done:
                duplicate.close()
                return
            self.sockets.append(duplicate)
            if self.expired:
                _shut(duplicate)

    def expire(self) -> None:
        with self.lock:
            if self.done:  # the exchange ended first: its duplicates are closed
                return
            self.expired = True
            for sock in self.sockets:
                _shut(sock)

    def finish(self) -> bool:
        """End the exchange's time; whether it had run out first (its sockets shut)."""
        self.timer.cancel()
        with self.lock:
            self.done = True
            for duplicate in self.sockets:
                duplicate.close()  # the connection itself stays open while its owner's is
            self.sockets.clear()
            return self.expired

    def ran_out(self) -> bool:
        """End the exchange's time; whether it was up: its sockets shut, or a socket's
        own timeout, never longer than the time left, fired as the timer was due."""
        return self.finish() or self.remaining() == 0


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def bounding(seconds: float) -> Iterator[Deadline]:
    """Shut down the sockets connections open inside this block ``seconds`` from now
    (``create_connection``, ``connect_any``, ``watch``), and stop waiting for what runs
    on threads of its own (``within``)."""
    deadline = Deadline(seconds)
    token = _current.set(deadline)
    deadline.timer.start()
    try:
        yield deadline
    finally:
        deadline.finish()
        _current.reset(token)


def settle() -> bool:
    """End the current deadline now that its exchange is over (nothing shut later can
    cut it); whether it had run out first. False outside ``bounding``."""
    deadline = _current.get()
    return deadline is not None and deadline.finish()


#: Actions running on threads of their own (``within``), by what they do: a call finds
#: the one it would start already running and waits for it. A system resolver that
#: never answers held a thread per lookup until its own timeouts (seconds to minutes),
#: as many as calls came in meanwhile; now one per host name, and at most this many.
MAX_RUNNING = 32
_running: dict[Hashable, _Run] = {}
_running_lock = threading.Lock()


class _Run:
    """One run of an action on a thread of its own, which any number of calls wait for."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.returned = False
        self.value: Any = None

    def outcome(self) -> Any:
        if self.returned:
            return self.value
        # Each waiting call raises a copy of its own: one exception raised in several
        # threads would have its traceback written by all of them.
        raise copy.copy(self.value)


def _run_of(key: Hashable, action: Callable[[], Any], what: str) -> _Run:
    """The run of ``action`` known as ``key``: the one running, or a new one."""
    with _running_lock:
        run = _running.get(key)
        if run is not None:
            return run
        if len(_running) >= MAX_RUNNING:
            raise OSError(
                f"{what} can't start: {len(_running)} others still wait for an answer"
                " (a resolver that doesn't answer?)"
            )
        run = _running[key] = _Run()

    def work() -> None:
        try:
            run.value, run.returned = action(), True
        except BaseException as error:  # handed to the waiting calls, which raise it
            run.value = error
        finally:
            with _running_lock:
                del _running[key]
            run.finished.set()

    try:
        threading.Thread(target=work, name=f"pgjobs {what}", daemon=True).start()
    except BaseException as error:  # no thread (the process at its limit): no run
        with _running_lock:
            del _running[key]
        run.value = error  # for the calls that joined it meanwhile
        run.finished.set()
        raise
    return run


def within(action: Callable[[], T], what: str, key: Hashable | None = None) -> T:
    """``action()``, which has no socket to shut, waited for until the current deadline
    (if any): past it the deadline expires and TimeoutError says ``what`` took too long.
    Its thread runs on, abandoned, until ``action`` returns (a lookup: until the system
    resolver gives up by its own timeouts). Calls of the same ``key`` while one runs
    wait for that one; while ``MAX_RUNNING`` run, a new one fails with OSError."""
    deadline = _current.get()
    if deadline is None:
        return action()
    run = _run_of(object() if key is None else key, action, what)
    if not run.finished.wait(deadline.remaining()):
        deadline.expire()
        raise TimeoutError(f"{what} took longer than the time left")
    return run.outcome()  # type: ignore[no-any-return]


def lookup(host: str, port: int) -> list[AddressInfo]:
    """``getaddrinfo`` of ``host`` for a TCP connection, within the current deadline (an
    IP address is read at once, without a thread)."""
    with contextlib.suppress(socket.gaierror):
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return within(
        lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
        "the host name's lookup",
        key=("getaddrinfo", host, port),
    )


def connect_any(
    found: list[AddressInfo], timeout: Any = None, source_address: Any = None
) -> socket.socket:
    """A socket connected to the first of ``found`` that takes it, each registered with
    the current deadline before connecting and given no longer than the time left (each
    had the whole timeout: ten addresses that don't answer took ten times it)."""
    problem: OSError = OSError("getaddrinfo returned no address")
    for family, kind, proto, _, address in found:
        sock = socket.socket(family, kind, proto)
        try:
            watch(sock)
            limit = _time_left(timeout)
            if limit is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(limit)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as error:
            sock.close()
            problem = error
        if _ran_out():
            break
    raise problem


def create_connection(
    address: tuple[str, int],
    timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: Any = None,
) -> socket.socket:
    """``socket.create_connection``, the lookup and the connecting within the current
    deadline; outside one, ``socket.create_connection`` itself."""
    if _current.get() is None:
        return socket.create_connection(address, timeout, source_address)
    host, port = address
    return connect_any(lookup(host, port), timeout, source_address)


def _time_left(timeout: Any) -> Any:
    deadline = _current.get()
    if deadline is None:
        return timeout
    left = max(deadline.remaining(), 0.001)
    return left if timeout is None or not isinstance(timeout, int | float) else min(timeout, left)


def _ran_out() -> bool:
    deadline = _current.get()
    return deadline is not None and (deadline.expired or deadline.remaining() == 0)


def watch(sock: socket.socket | None) -> None:
    """Register ``sock`` with the current deadline, if a request has one."""
    deadline = _current.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)
