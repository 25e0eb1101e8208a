"""A TCP proxy to PostgreSQL whose connections can be made to go silent (tests only).

``blackhole()`` stops forwarding in both directions without closing anything: what
a NAT timeout, a failover or a pulled cable looks like to both ends (no FIN, no RST).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Pipe:
    """One client connection and its server connection, forwarded both ways."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.silent = threading.Event()
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.silent.is_set():
                    continue  # swallowed: the path is dead, nobody is told
                sink.sendall(data)
        if not self.silent.is_set():
            self.close()

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
    ) -> None:
        self.target = target
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
                pipe = Pipe(client, server)
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

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for pipe in self.pipes:
                pipe.close()
