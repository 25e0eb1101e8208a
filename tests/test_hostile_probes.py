"""The endpoint of ``runworker --metrics-port`` against idle and slow connections: it
lives in the worker's process, a thread per connection, so it must hold few threads
and none for long."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from django_pgjobs import probes
from tests.conftest import wait_until


@pytest.fixture
def endpoint() -> Iterator[probes.Endpoint]:
    served = probes.Endpoint("127.0.0.1", 0, probes.Board(1))
    served.start()
    yield served
    served.stop()


def connect(endpoint: probes.Endpoint) -> socket.socket:
    return socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)


def livez(endpoint: probes.Endpoint) -> bytes:
    with connect(endpoint) as probe:
        probe.sendall(b"GET /livez HTTP/1.0\r\n\r\n")
        return probe.recv(200)


def serving() -> int:
    """Threads of this process serving a connection to an endpoint."""
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


def test_idle_connections_hold_no_more_threads_than_the_limit(monkeypatch):
    monkeypatch.setattr(probes, "READ_TIMEOUT", 60.0)  # none closed while the test runs
    wait_until(lambda: serving() == 0)  # those of other tests' connections have ended
    endpoint = probes.Endpoint("127.0.0.1", 0, probes.Board(1))
    endpoint.start()
    idle = []
    try:
        for _ in range(probes.MAX_CONNECTIONS + 40):
            held = connect(endpoint)
            held.sendall(b"GET /livez HTTP/1.1\r\n")  # and never the rest
            idle.append(held)
        # Each one over the limit is closed, unanswered (300 held 300 threads for good).
        wait_until(lambda: serving() == probes.MAX_CONNECTIONS)
        assert idle[-1].recv(100) == b""
        assert serving() == probes.MAX_CONNECTIONS
        for held in idle:
            held.close()
        wait_until(lambda: serving() == 0)
        assert livez(endpoint).startswith(b"HTTP/1.0 200")
    finally:
        for held in idle:
            held.close()
        endpoint.stop()


def test_a_connection_that_sends_nothing_more_is_closed(monkeypatch):
    monkeypatch.setattr(probes, "READ_TIMEOUT", 0.3)
    served = probes.Endpoint("127.0.0.1", 0, probes.Board(1))
    served.start()
    try:
        with connect(served) as held:
            held.sendall(b"GET /livez HTTP/1.1\r\n")
            assert held.recv(100) == b""  # closed by the endpoint, within the client's 10 s
    finally:
        served.stop()


def test_the_server_header_does_not_say_pythons_version(endpoint):
    answer = livez(endpoint)
    assert b"Server: pgjobs\r\n" in answer and b"Python" not in answer


def test_a_request_line_reaches_the_log_escaped(endpoint, caplog):
    """Python's own log_message escapes control characters; ours, at DEBUG, wrote the
    request line as it came: anyone who reaches the port sent the log's reader (a
    terminal) escape sequences, and forged lines with a bare CR or other breaks."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.probes")
    with connect(endpoint) as probe:
        probe.sendall(b"GET /livez\x1b[2J\x85\r HTTP/1.0\r\n\r\n")
        probe.recv(200)
    wait_until(lambda: any("metrics endpoint" in r.getMessage() for r in caplog.records))
    said = [r.getMessage() for r in caplog.records if "metrics endpoint" in r.getMessage()]
    assert said and all(line.isprintable() for line in said), said
    assert any(r"/livez\x1b[2J" in line for line in said), said


# Python warns of any fork from a process with threads (pytest's may have some): the
# child here takes no lock, it writes the board's shared memory and exits.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_failing_worker_process_s_reason_reaches_the_parent_cut_to_size():
    """Under --processes the parent answers for its children: a child's reason for
    being unready crosses in the board's shared memory, cut to REASON_BYTES on a
    character's boundary however many queues (and however named) it lists."""
    board = probes.Board(2)
    endpoint = probes.Endpoint("127.0.0.1", 0, board)
    reason = "; ".join(f"queue {'é' * 40 + str(n)!r}: claims failing" for n in range(20))

    def child() -> None:
        board.report(0, probes.READY, time.monotonic())
        board.report(1, probes.FAILING, time.monotonic(), reason)

    try:
        # Forked before the endpoint's thread starts, as runworker does.
        forked = multiprocessing.get_context("fork").Process(target=child)
        forked.start()
        forked.join(10)
        assert forked.exitcode == 0
        endpoint.start()
        with connect(endpoint) as probe:
            probe.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            answer = b"".join(iter(lambda: probe.recv(4096), b""))
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 503")
        text = body.decode()
        assert "\ufffd" not in text  # cut between characters, not inside one
        assert text.startswith("not ready: worker process 2 (pid ")
        assert "worker process 1" not in text
        assert "claims failing" in text and text.endswith("...\n")
        assert len(text.split(": ", 1)[1].encode()) <= probes.REASON_BYTES + 40
        assert livez(endpoint).startswith(b"HTTP/1.0 200")
        board.report(1, probes.READY, time.monotonic())  # its claims pass again
        with connect(endpoint) as probe:
            probe.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            assert probe.recv(200).startswith(b"HTTP/1.0 200")
    finally:
        endpoint.stop()
