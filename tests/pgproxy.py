"""A TCP proxy to PostgreSQL whose connections can be made to go silent (tests only).

``blackhole()`` stops forwarding in both directions without closing anything: what
a NAT timeout, a failover or a pulled cable looks like to both ends (no FIN, no RST).
``cut_client()`` breaks one connection for the client alone (a reset), while the
server's end stays open and whatever the server still sends is swallowed: what a
client that gave up on a partition (keepalives, ``tcp_user_timeout``) leaves behind,
a backend that goes on with its statement and commits it. With ``hide_backend_pids``
the proxy hands each client another backend pid than its server's, as a pooler
(PgBouncer) does: its connections' backends can't be told by their pid (connect with
``sslmode=disable`` and ``gssencmode=disable``: the proxy must read the startup).
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading


class Pipe:
    """One client connection and its server connection, forwarded both ways."""

    def __init__(
        self, client: socket.socket, server: socket.socket, *, hide_backend_pid: bool = False
    ) -> None:
        self.client, self.server = client, server
        self.silent = threading.Event()
        # The server's messages until its BackendKeyData, while it is to be rewritten.
        self._startup: bytearray | None = bytearray() if hide_backend_pid else None
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.silent.is_set():
                    continue  # swallowed: the path is dead, nobody is told
                if source is self.server and self._startup is not None:
                    data = self._hide_pid(data)
                sink.sendall(data)
        if not self.silent.is_set():
            self.close()

    def _hide_pid(self, data: bytes) -> bytes:
        """What to pass on of the server's ``data``: whole messages, the pid in its
        BackendKeyData ('K') replaced by one no backend has."""
        pending = self._startup
        assert pending is not None
        pending += data
        out = bytearray()
        while len(pending) >= 5:
            length = int.from_bytes(pending[1:5], "big")
            if len(pending) < 1 + length:
                break
            message = pending[: 1 + length]
            del pending[: 1 + length]
            if message[:1] == b"K":
                message[5:9] = random.randrange(2**30, 2**31).to_bytes(4, "big")
                out += message + pending
                self._startup = None
                return bytes(out)
            out += message
        return bytes(out)

    def cut_client(self) -> None:
        """Reset the client's connection; keep the server's open, and deaf."""
        self.silent.set()
        with contextlib.suppress(OSError):
            # A reset, not a FIN: nothing the client could mistake for an orderly end.
            # (SHUT_RD sends nothing; it ends the pump's wait on the socket.)
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.client.shutdown(socket.SHUT_RD)
        self.client.close()

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class PgProxy:
    def __init__(
        self,
        target: tuple[str, int] = ("127.0.0.1", 5432),
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        hide_backend_pids: bool = False,
    ) -> None:
        self.target = target
        self.hide_backend_pids = hide_backend_pids
        self.listener = socket.create_server(listen)
        self.port = self.listener.getsockname()[1]
        self.pipes: list[Pipe] = []
        self.swallow_new = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                pipe = Pipe(client, server, hide_backend_pid=self.hide_backend_pids)
                with self._lock:
                    if self.swallow_new:
                        pipe.silent.set()
                    self.pipes.append(pipe)

    def connections(self) -> int:
        with self._lock:
            return len(self.pipes)

    def blackhole(self, *, new_ones_too: bool = False) -> None:
        """Make every connection so far go silent (and, with ``new_ones_too``, every
        later one: connects then hang at the handshake)."""
        with self._lock:
            self.swallow_new = new_ones_too
            for pipe in self.pipes:
                pipe.silent.set()

    def cut_client_of(self, server_port: int) -> None:
        """``cut_client()`` the connection whose server end is local port
        ``server_port`` (its backend's ``client_port`` in pg_stat_activity)."""
        with self._lock:
            pipes = [p for p in self.pipes if _local_port(p.server) == server_port]
        assert len(pipes) == 1, f"no connection of the proxy's is the server's port {server_port}"
        pipes[0].cut_client()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for pipe in self.pipes:
                pipe.close()


def _local_port(sock: socket.socket) -> int | None:
    try:
        return sock.getsockname()[1]
    except OSError:  # closed
        return None
