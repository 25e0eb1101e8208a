"""A connector's timeout bounds the whole exchange: the host name's lookup, connecting
to each of its addresses, the TLS handshake; against real peers on localhost."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from django_pgjobs.connectors import deadline
from django_pgjobs.connectors.errors import ConnectorError
from django_pgjobs.connectors.http import HttpConnector
from django_pgjobs.connectors.smtp import SmtpConnector
from tests.conftest import wait_until
from tests.test_hostile_entry_points import LocalPeer, ended

ROOT = Path(__file__).resolve().parent.parent

# -- the host name's lookup, and connecting to each address, in the timeout -----------------


def namespaces_refused() -> str | None:
    """Why this machine can't give a child its own mount and network namespaces."""
    if shutil.which("unshare") is None:
        return "no unshare here"
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "true"], capture_output=True, timeout=10, check=False
    )
    if probe.returncode:
        return probe.stderr.decode(errors="replace").strip() or "unshare failed"
    return None


def in_hung_resolver(
    cases: dict[str, object], hosts: str, listen: tuple[str, ...] = ()
) -> dict[str, dict[str, object]]:
    """tests/hung_resolver.py's report of ``cases``, run in namespaces of their own where
    the name server (127.0.0.1) never answers and /etc/hosts is ``hosts``."""
    refused = namespaces_refused()
    if refused:
        pytest.skip(f"no namespaces here: {refused}")
    with tempfile.TemporaryDirectory() as scratch:
        resolv, hosts_file = Path(scratch, "resolv.conf"), Path(scratch, "hosts")
        # attempts:1 timeout:30: one wait of 30 s for an answer (the system's default is
        # 2 tries of 5 s per name server); the calls' own timeouts are 0.5 s.
        resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
        hosts_file.write_text(hosts)
        script = (
            f"mount --bind {resolv} /etc/resolv.conf && mount --bind {hosts_file} /etc/hosts"
            ' && ip link set lo up && exec "$@"'
        )
        command = [
            sys.executable,
            "-m",
            "tests.hung_resolver",
            json.dumps({"listen": listen, "cases": cases}),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        ran = subprocess.run(
            ["unshare", "--mount", "--net", "sh", "-c", script, "sh", *command],
            capture_output=True, cwd=ROOT, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    return json.loads(ran.stdout.decode().splitlines()[-1])


HOSTS = f"127.0.0.1 localhost {socket.gethostname()}\n"


def test_a_hung_name_server_holds_no_call_past_the_timeout():
    """getaddrinfo ran outside the deadline: a name server that never answers held the
    call for the resolver's own timeout (30 s here; 10 s by default, per name server)."""
    url = "http://hung.example.test/hook"
    cases = {
        "http": ["http", {"url": url, "timeout": 0.5}, None],
        "https": ["http", {"url": url.replace("http", "https"), "timeout": 0.5}, None],
        "http-allowed-network": ["http", {"url": url, "timeout": 0.5}, ["203.0.113.0/24"]],
        "http-allowed-name": ["http", {"url": url, "timeout": 0.5}, ["hung.example.test"]],
        "smtp": ["smtp", {"host": "hung.example.test", "timeout": 0.5}, None],
    }
    report = in_hung_resolver(cases, HOSTS)
    for case, outcome in report.items():
        assert outcome["seconds"] is not None, f"{case}: still waiting for the resolver"
        assert outcome["seconds"] < 2.5, (case, outcome)
        assert "within the timeout (0.5 s)" in outcome["error"], (case, outcome)


def test_connecting_to_each_of_a_names_addresses_shares_the_one_timeout():
    """Each address was given the whole timeout: a name with three that don't answer
    took three times it (1.5 s for 0.5 s)."""
    cases = {
        "http": ["http", {"url": "http://thrice.test:{port}/hook", "timeout": 0.5}, None],
        "smtp": ["smtp", {"host": "thrice.test", "port": "{port}", "timeout": 0.5}, None],
        "allowed": ["http", {"url": "http://thrice.test:{port}/", "timeout": 0.5}, ["127.0.0.0/8"]],
    }
    hosts = HOSTS + "127.0.0.2 thrice.test\n127.0.0.3 thrice.test\n127.0.0.4 thrice.test\n"
    report = in_hung_resolver(cases, hosts, ("127.0.0.2", "127.0.0.3", "127.0.0.4"))
    for case, outcome in report.items():
        assert outcome["seconds"] is not None, f"{case}: still connecting"
        assert outcome["seconds"] < 1.2, (case, outcome)
        assert "within the timeout (0.5 s)" in outcome["error"], (case, outcome)


# -- the TLS handshake in the timeout -----------------------------------------------------


class TricklingTls(LocalPeer):
    """A server whose TLS handshake never ends: after the client's hello (and for
    STARTTLS, an SMTP greeting and answers up to it, the last ``late`` seconds late) it
    sends a record a byte each ``pause`` seconds, never silent as long as one read's
    timeout."""

    RECORD = b"\x16\x03\x03\x40\x00" + b"\x02" * 0x4000  # a handshake record of 16 KiB

    def __init__(self, starttls: bool, late: float = 0.0, pause: float = 0.1) -> None:
        self.starttls, self.late = starttls, late
        super().__init__(pause)

    def talk(self, peer: socket.socket) -> None:
        peer.settimeout(10)
        if self.starttls:
            with peer.makefile("rb") as commands:
                peer.sendall(b"220 ready\r\n")
                commands.readline()  # EHLO
                peer.sendall(b"250-localhost\r\n250 STARTTLS\r\n")
                commands.readline()  # STARTTLS
                if self.stop.wait(self.late):
                    return
                peer.sendall(b"220 go ahead\r\n")
        peer.recv(65536)  # the client's hello
        self.trickle(peer, self.RECORD)


@pytest.mark.parametrize("kind", ["https", "smtp-ssl", "smtp-starttls"])
def test_a_tls_handshake_that_trickles_is_cut_off_at_the_timeout(kind):
    """The socket the deadline shuts was detached when TLS wrapped it, so only the
    socket's own timeout cut a handshake: STARTTLS's, set when the session connected,
    gave a handshake begun 0.8 s into a 1 s timeout 1 s more (1.8 s in all)."""
    peer = TricklingTls(starttls=kind == "smtp-starttls", late=0.8)
    try:
        if kind == "https":
            url = f"https://127.0.0.1:{peer.port}/"
            outcome = ended(HttpConnector("tls", {"url": url, "timeout": 1}, {}).request, "TLS")
            expected = "no whole answer within the timeout (1 s)"
        else:
            tls = {"use_ssl": kind == "smtp-ssl", "use_tls": kind == "smtp-starttls"}
            config = {"host": "127.0.0.1", "port": peer.port, "timeout": 1, **tls}
            outcome = ended(SmtpConnector("tls", config, {}).test, "still shaking hands")
            expected = "no whole exchange within the timeout (1 s)"
    finally:
        peer.close()
    assert isinstance(outcome["error"], ConnectorError), outcome
    assert expected in str(outcome["error"]), outcome
    assert outcome["seconds"] < 1.5, outcome


def test_the_lookup_of_this_hosts_own_name_for_smtp_is_in_the_timeout():
    """Django's SMTP backend names this host in its EHLO by socket.getfqdn(), a lookup
    of this host's name made before connecting: with this host's name in no hosts file
    and a hung name server, the first mail of a process waited for the resolver."""
    cases = {"smtp": ["smtp", {"host": "127.0.0.1", "port": "{port}", "timeout": 0.5}, None]}
    report = in_hung_resolver(cases, "127.0.0.1 localhost\n", ("127.0.0.1",))
    assert report["smtp"]["seconds"] is not None, "still waiting for the resolver"
    assert report["smtp"]["seconds"] < 2.5, report
    assert "within the timeout (0.5 s)" in report["smtp"]["error"], report


# -- actions on threads of their own (a lookup): one per name, a bounded number -------------


@pytest.fixture
def held():
    """Actions that block until the test ends, and a count of their runs."""
    release, runs = threading.Event(), []

    def action(value: object = "answer") -> Callable[[], object]:
        def run() -> object:
            runs.append(value)
            release.wait(30)
            return value

        return run

    yield action, runs
    release.set()
    wait_until(lambda: not deadline._running)


def test_calls_for_one_name_while_its_lookup_hangs_share_one_thread(held):
    """A resolver that doesn't answer held a thread per call until its own timeouts."""
    action, runs = held
    for _ in range(5):
        with deadline.bounding(0.05), pytest.raises(TimeoutError, match="took longer"):
            deadline.within(action(), "the host name's lookup", key=("getaddrinfo", "a", 80))
    assert runs == ["answer"] and len(deadline._running) == 1


def test_past_max_running_a_new_lookup_fails_at_once_and_is_retried_later(held, monkeypatch):
    action, runs = held
    monkeypatch.setattr(deadline, "MAX_RUNNING", 2)
    for host in ("a", "b"):
        with deadline.bounding(0.05), pytest.raises(TimeoutError):
            deadline.within(action(host), "the host name's lookup", key=host)
    started = time.monotonic()
    with deadline.bounding(5), pytest.raises(OSError, match="2 others still wait"):
        deadline.within(action("c"), "the host name's lookup", key="c")
    assert time.monotonic() - started < 1 and runs == ["a", "b"]


def test_a_lookup_that_answers_is_shared_by_the_calls_waiting_and_then_forgotten(monkeypatch):
    answered = threading.Event()
    runs: list[int] = []
    joined: list[object] = []  # calls that have the run they will wait for
    run_of = deadline._run_of

    def counted_run_of(*args: object) -> object:
        run = run_of(*args)
        joined.append(run)
        return run

    monkeypatch.setattr(deadline, "_run_of", counted_run_of)

    def slow_answer() -> list[int]:
        runs.append(1)
        answered.wait(10)
        return [1, 2]

    results: list[object] = []

    def call() -> None:
        with deadline.bounding(10):
            results.append(deadline.within(slow_answer, "lookup", key="shared"))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(joined) == 3)  # all three wait before the answer comes
    answered.set()
    for thread in threads:
        thread.join(10)
    assert results == [[1, 2]] * 3 and runs == [1] and not deadline._running


def test_each_waiting_call_raises_its_own_copy_of_the_lookup_s_error(monkeypatch):
    """Two calls wait for one lookup that fails: each raises an error of its own (one
    exception raised in two threads has its traceback written by both)."""
    answer = threading.Event()
    joined: list[object] = []
    run_of = deadline._run_of

    def counted_run_of(*args: object) -> object:
        run = run_of(*args)
        joined.append(run)
        return run

    def fails() -> None:
        answer.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(deadline, "_run_of", counted_run_of)
    raised: list[BaseException] = []

    def call() -> None:
        with deadline.bounding(10):
            try:
                deadline.within(fails, "lookup", key="x")
            except socket.gaierror as error:
                raised.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(joined) == 2)
    answer.set()
    for thread in threads:
        thread.join(10)
    assert joined[0] is joined[1]  # one lookup, waited for twice
    assert len(raised) == 2 and raised[0] is not raised[1]
    assert raised[0].errno == raised[1].errno == socket.EAI_AGAIN


def test_a_lookup_whose_thread_could_not_start_is_not_waited_for_by_the_next(monkeypatch):
    """A thread that can't start (the process at its limit of threads) left its run
    registered, never to finish: every later call for that name waited out its whole
    timeout for it, and 32 such names failed every lookup, until the worker restarted."""
    real_start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with deadline.bounding(5):  # its timer's thread started
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            deadline.within(lambda: "first", "the host name's lookup", key="unstarted")
        monkeypatch.setattr(threading.Thread, "start", real_start)
    assert "unstarted" not in deadline._running
    with deadline.bounding(5):
        assert deadline.within(lambda: "again", "the lookup", key="unstarted") == "again"
