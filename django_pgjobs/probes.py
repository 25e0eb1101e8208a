"""The HTTP endpoint of ``runworker --metrics-port``: ``/metrics``, ``/livez``, ``/readyz``.

With ``--processes N`` the command's parent process serves it for all of its
worker processes: each reports its state into a small array of shared memory
(made before the fork), and their counters meet in ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from ctypes import c_char, c_double
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import RawArray
from typing import TYPE_CHECKING, Any

from django.db import connections

from . import conf, logs

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)

#: Seconds between a worker process's reports of its state.
REPORT_EVERY = 1.0

#: Seconds the passes of a worker's loop, or the claims of one of its queues, may keep
#: failing (no pass or claim of that queue going through since the first failure)
#: before ``/readyz`` says the worker is not ready. The loop backs off up to 10 s
#: between failures, a queue's claims too: by then it failed at least four times, and
#: a hiccup (one deadlock, one statement timeout) is not said. Ready again once a pass,
#: or that queue's claim, goes through.
FAILING_AFTER = 30.0

#: Bytes of a worker process's reason for being unready that the board keeps.
REASON_BYTES = 400

# A slot of the board: [state, last heartbeat (time.monotonic(), one clock for every
# process of the machine), pid]; and REASON_BYTES of text (UTF-8, NUL-padded) that say
# why a FAILING one is.
_STATE, _BEAT, _PID = range(3)
STARTING, READY, STOPPING, STOPPED, FAILING = 0.0, 1.0, 2.0, 3.0, 4.0
_NAMES = {
    STARTING: "starting",
    READY: "ready",
    STOPPING: "stopping",
    STOPPED: "stopped",
    FAILING: "failing",
}


class Board:
    """What each worker process of this command last said about itself."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._values = RawArray(c_double, 3 * processes)
        self._reasons = RawArray(c_char, REASON_BYTES * processes)
        now = time.monotonic()
        for index in range(processes):
            self._values[3 * index + _BEAT] = now  # a starting worker has until the stale limit

    def report(self, index: int, state: float, beat: float | None, reason: str = "") -> None:
        base = 3 * index
        self._values[base + _PID] = os.getpid()
        if beat is not None:
            self._values[base + _BEAT] = beat
        # Written before the state that makes it read, and only when it changed: no
        # lock between processes (a child killed holding one would hang the probes),
        # so a read racing a change may see it torn, for one answer.
        text = _fitted(reason)
        start = REASON_BYTES * index
        if self._reasons[start : start + REASON_BYTES] != text:
            self._reasons[start : start + REASON_BYTES] = text
        self._values[base + _STATE] = state

    def _reason(self, index: int) -> str:
        start = REASON_BYTES * index
        text = self._reasons[start : start + REASON_BYTES].split(b"\0", 1)[0]
        return text.decode("utf-8", "replace")

    def problems(self, *, ready: bool) -> list[str]:
        """Why the processes are not live (or not ready); [] when they all are."""
        stale_after = conf.get("WORKER_STALE_AFTER")
        now = time.monotonic()
        found = []
        for index in range(self.processes):
            state, beat, pid = self._values[3 * index : 3 * index + 3]
            who = f"worker process {index + 1}" + (f" (pid {int(pid)})" if pid else "")
            if state == STOPPED:
                found.append(f"{who} has stopped")
            elif now - beat > stale_after:
                found.append(f"{who}: no heartbeat for {now - beat:.0f}s")
            elif ready and state == FAILING:
                found.append(f"{who}: {self._reason(index) or 'failing'}")
            elif ready and state != READY:
                found.append(f"{who} is {_NAMES.get(state, 'unknown')}")
        return found


def _fitted(reason: str) -> bytes:
    """``reason`` as the board keeps it: UTF-8, cut to REASON_BYTES (on a character's
    boundary, marked with "..."), NUL-padded."""
    data = reason.encode()
    if len(data) > REASON_BYTES:
        data = data[: REASON_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."
    return data.ljust(REASON_BYTES, b"\0")


class Reporter:
    """A thread that copies a worker's state into its slot of the board, every second."""

    def __init__(self, board: Board, index: int, worker: Worker) -> None:
        self.board, self.index, self.worker = board, index, worker
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgjobs-probe", daemon=True)

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(REPORT_EVERY * 2)
        self.board.report(self.index, STOPPED, None)

    def _run(self) -> None:
        while True:
            state, reason = worker_state(self.worker), ""
            if state == READY:
                try:
                    reason = failing(self.worker)
                except Exception:  # this thread ending would leave the worker for dead
                    logger.debug("reading what fails in the worker failed", exc_info=True)
                if reason:
                    state = FAILING
            self.board.report(self.index, state, self.worker.heartbeat_ok_at, reason)
            if self._done.wait(REPORT_EVERY):
                return


def worker_state(worker: Worker) -> float:
    if worker.stopping.is_set():
        return STOPPING
    notifier = worker._notifier
    if worker.record is None or notifier is None or not notifier.connected.is_set():
        return STARTING
    return READY


def failing(worker: Worker) -> str:
    """Why ``worker`` is not ready though it runs: its loop's passes, or the claims of
    some of its queues, failing for more than FAILING_AFTER; "" when none is. Says
    what fails, since when (UTC) and the error's class, never the error's text: a
    refused row's values are in it (the worker's log has it in full)."""
    now, wall = time.monotonic(), time.time()
    said = []
    for name, since, failures, kind in worker.failing(FAILING_AFTER):
        what = "its loop: passes" if name is None else f"queue {name!r}: claims"
        at = datetime.fromtimestamp(wall - (now - since), tz=UTC).strftime("%H:%M:%S UTC")
        said.append(
            f"{what} failing since {at} ({logs.delay(now - since)}, {failures} failed, {kind})"
        )
    if not said:
        return ""
    return "; ".join(said) + "; see the worker's log"


#: Most connections the endpoint serves at once; one more is closed unanswered. A
#: thread each, in the worker's own process: 300 idle connections held 300 threads
#: for good, and a process's thread limit stops its jobs too.
MAX_CONNECTIONS = 32
#: Seconds a connection may wait between two reads of its request (or a write of the
#: answer) before it is closed.
READ_TIMEOUT = 10.0


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server with at most ``MAX_CONNECTIONS`` threads."""

    daemon_threads = True
    # Connections the kernel holds until accepted: beyond, a client's SYN is dropped and
    # retried a second later (socketserver's 5 made a burst of 70 take 10 s to connect).
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: no thread, no answer
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: it would have freed the slot
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Endpoint:
    """The HTTP server. Binding happens here, so a port in use fails the command at
    once; serving starts with ``start()`` (in the parent, after any fork)."""

    def __init__(self, address: str, port: int, board: Board) -> None:
        self.board = board
        # READ_TIMEOUT: a socket timeout on each read and write of a connection.
        handler = type("Handler", (_Handler,), {"board": board, "timeout": READ_TIMEOUT})
        self.server = _BoundedServer((address, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="pgjobs-metrics", daemon=True
        )
        self._thread.start()

    def close_in_child(self) -> None:
        """A forked worker process lets go of the parent's listening socket."""
        self.server.socket.close()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    board: Board
    server_version = "pgjobs"

    def version_string(self) -> str:
        return self.server_version  # it said "pgjobs Python/3.12.1" to anyone asking

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._metrics()
            elif path in ("/livez", "/readyz"):
                problems = self.board.problems(ready=path == "/readyz")
                word = "ready" if path == "/readyz" else "live"
                text = f"not {word}: " + "; ".join(problems) if problems else word
                self._send(503 if problems else 200, text + "\n", "text/plain; charset=utf-8")
            else:
                self._send(404, "try /metrics, /livez or /readyz\n", "text/plain; charset=utf-8")
        finally:
            connections.close_all()  # this request's thread is about to end

    def _metrics(self) -> None:
        from .metrics import exposition

        try:
            body, content_type = exposition(self.headers.get("Accept", ""))
        except Exception:
            logger.exception("metrics exposition failed")
            self._send(500, "metrics exposition failed; see the worker's log\n", "text/plain")
            return
        self._send(200, body, content_type)

    def _send(self, status: int, body: str | bytes, content_type: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Escaped, as Python's own does: the request line is anyone's who reaches the port.
        logger.debug("metrics endpoint: %s", logs.printable(format % args))


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A ``PROMETHEUS_MULTIPROC_DIR`` for the worker processes about to be forked: the
    one set in the environment, or a fresh directory removed afterwards."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="pgjobs-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield path
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


def count_in_shared_dir() -> None:
    """In a forked worker process: write this process's metrics to the shared directory,
    even if prometheus_client was imported (and chose in-memory values) before the
    directory was set."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
