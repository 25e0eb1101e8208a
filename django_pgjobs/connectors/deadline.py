"""One deadline for a whole exchange with a peer: an HTTP request (connecting, sending,
reading the answer), an SMTP session.

A socket's timeout bounds each operation alone: a peer that sends a byte a second
never lets one read wait long, and held a job as long as it liked. So the
connections of an exchange register their sockets here, and when its time is up
they are shut down, which wakes the read blocked on them with end of file.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

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
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self.lock:
            if self.done:  # the request ended first: its sockets may be another's by now
                return
            self.expired = True
            for sock in self.sockets:
                _shut(sock)

    def finish(self) -> bool:
        """End the exchange's time; whether it had run out first (its sockets shut)."""
        self.timer.cancel()
        with self.lock:
            self.done = True
            self.sockets.clear()
            return self.expired


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def bounding(seconds: float) -> Iterator[Deadline]:
    """Shut down the sockets connections open inside this block ``seconds`` from now
    (``watched``, ``adopt``, ``watch``)."""
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


def watched(connect: Callable[..., socket.socket]) -> Callable[..., socket.socket]:
    """``connect`` (``socket.create_connection``'s signature), its socket registered
    with the current deadline and given no longer a timeout than the time left (TLS's
    handshake runs on it before the wrapped socket can be registered)."""

    def connect_within(address: tuple[str, int], timeout: Any = None, *args: Any) -> socket.socket:
        return adopt(connect(address, timeout, *args), timeout)

    return connect_within


def adopt(sock: socket.socket, timeout: Any) -> socket.socket:
    """``sock``, just connected with ``timeout``, registered with the current deadline
    and given no longer a timeout than the time left."""
    watch(sock)
    deadline = _current.get()
    if deadline is not None and isinstance(timeout, int | float):
        sock.settimeout(max(min(timeout, deadline.remaining()), 0.001))
    return sock


def watch(sock: socket.socket | None) -> None:
    """Register ``sock`` with the current deadline, if a request has one."""
    deadline = _current.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)
