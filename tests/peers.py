"""Real local peers for connector tests: an HTTP server and an SMTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: time.time() when it arrived.
    at: float = field(default_factory=time.time)


@dataclass
class HttpPeer:
    """What the test server saw, and what it answers (change it at any time)."""

    url: str
    status: int = 200
    #: The answer's body, or a function making it from the request (an echo).
    answer: bytes | Callable[[Received], bytes] = b'{"ok": true}'
    content_type: str = "application/json"
    #: More headers of the answer (e.g. Retry-After).
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: Seconds each request is held before the answer: makes overlap observable.
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    peer: HttpPeer

    def _handle(self) -> None:
        peer = self.server.peer  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with peer.lock:
            received = Received(self.command, self.path, dict(self.headers), body)
            peer.in_flight += 1
            peer.max_in_flight = max(peer.max_in_flight, peer.in_flight)
            peer.received.append(received)
        try:
            if peer.delay:
                time.sleep(peer.delay)
            answer = peer.answer(received) if callable(peer.answer) else peer.answer
            self.send_response(peer.status)
            self.send_header("Content-Type", peer.content_type)
            self.send_header("Content-Length", str(len(answer)))
            for name, value in peer.extra_headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)
        finally:
            with peer.lock:
                peer.in_flight -= 1

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_peer() -> Iterator[HttpPeer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    peer = HttpPeer(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    server.peer = peer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield peer
    server.shutdown()
    server.server_close()


@dataclass
class SmtpPeer:
    host: str
    port: int
    username: str = "mailer"
    password: str = "smtp-pass-0001"
    messages: list[Message] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    #: Subjects of messages the server turns away once ("451 try again later").
    refuse_once: set[str] = field(default_factory=set)


class _Sink:
    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        if message["Subject"] in self.peer.refuse_once:
            self.peer.refuse_once.discard(message["Subject"])
            return "451 4.3.0 try again later"
        self.peer.messages.append(message)
        return "250 OK"


class _Controller(Controller):
    def factory(self) -> Any:
        # The test server takes AUTH over plain TCP on purpose: it is on 127.0.0.1.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_peer() -> Iterator[SmtpPeer]:
    """An SMTP server that requires AUTH with the peer's username and password."""
    peer = SmtpPeer(host="127.0.0.1", port=free_port())

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == peer.username
            and data.password.decode() == peer.password
        )
        peer.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "", ok))
        # handled=False: the server answers 535 itself (its default leaves the client waiting).
        return AuthResult(success=ok, handled=False)

    controller = _Controller(
        _Sink(peer),
        hostname=peer.host,
        port=peer.port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield peer
    controller.stop()
