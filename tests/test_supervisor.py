"""runworker --processes' supervisor: children that fail to start are restarted ever
more slowly; children that stop cleanly are not restarted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import ROOT

SCRIPT = """
import os, signal, sys, threading
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
import django
django.setup()
from django_pgjobs.supervisor import run_processes

mode = sys.argv[1]
if mode == "stop-early":
    # The first child asks the supervisor to stop while it is still starting the others:
    # each child says it started (stdout), then waits to be stopped.
    def target(index):
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
        print("started", index, flush=True)
        if index == 0:
            os.kill(os.getppid(), signal.SIGTERM)
        stopped.wait(20)  # a child started after the stop is never told to stop
        return 0

    sys.exit(run_processes(int(sys.argv[2]), target))
# A child that fails before registering a worker, or one that stops cleanly.
target = (lambda index: 1) if mode == "fail" else (lambda index: 0)
if mode == "rescue-fails":  # a worker that registered, then died, its database away
    from django.db import OperationalError
    from django_pgjobs import supervisor

    def target(index):
        supervisor.announce("worker:7")
        return 75

    def rescue(worker_ids):
        raise OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5499 failed: '
            "Connection refused\\n\\tIs the server running on that host?"
        )

    stop = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    stop.daemon = True
    stop.start()
    sys.exit(run_processes(1, target, rescue=rescue))
if mode == "raise":  # as a worker whose database was dropped under it
    from django.db import OperationalError

    def target(index):
        raise OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  database "gone" does not exist\\nHINT: a second line'
        )
stop = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
stop.daemon = True
stop.start()
sys.exit(run_processes(1, target))
"""


def supervise(mode: str, *more: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, *more],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_child_that_fails_to_start_is_restarted_after_a_doubling_delay():
    code, output = supervise("fail")
    delays = [float(d) for d in re.findall(r"restarting it in ([\d.]+)s", output)]
    assert delays[:3] == [0.5, 1.0, 2.0], output
    assert len(delays) <= 4, "no crash loop: at most 4 restarts in 4 s"
    assert code == 1, output


def test_a_child_that_fails_to_start_says_why():
    """A child that raised as it started (its database dropped, or refusing) exited 1
    saying nothing: `worker process 0 (pid 4242) exited 1 after 0.0s; restarting it in
    30.0s (it failed to start)`, every 30 s, and the reason was nowhere."""
    code, output = supervise("raise")
    lines = [line for line in output.splitlines() if "restarting it in" in line]
    assert lines and all(
        line.endswith(
            "(it failed to start: OperationalError: connection failed: connection to server"
            ' at "127.0.0.1", port 5432 failed: FATAL:  database "gone" does not exist)'
        )
        for line in lines
    ), output
    assert "Traceback" not in output and "a second line" not in output, output
    assert code == 1, output


def test_a_rescue_the_database_refuses_is_one_line():
    """The supervisor rescues a dead child's jobs at once; with the database away (the
    likely reason the child died) that failed with a traceback of 40 lines per child."""
    _code, output = supervise("rescue-fails")
    said = [line for line in output.splitlines() if "could not rescue" in line]
    assert said, output
    assert said[0].endswith(
        "could not rescue the jobs of worker(s) [7] at once (OperationalError: connection"
        ' failed: connection to server at "127.0.0.1", port 5499 failed: Connection'
        " refused); a rescue pass takes them once the worker's heartbeat is older than"
        " WORKER_STALE_AFTER"
    ), said
    assert "Traceback" not in output, output


def test_a_child_that_stops_cleanly_is_not_replaced():
    code, output = supervise("exit")
    assert code == 0 and "restarting" not in output, output


def test_a_stop_while_children_are_starting_starts_no_more():
    # SIGTERM during the first starts stopped those already started but went on
    # starting the rest: `runworker --processes 100000` could not be stopped.
    code, output = supervise("stop-early", "300")
    started = output.count("started ")
    assert 1 <= started < 150, output[-2000:]  # all 300 before
    assert code == 0, output[-2000:]


@pytest.mark.parametrize("processes", [0, -1, 257, 100_000])
def test_runworker_refuses_processes_out_of_range(processes):
    # --processes 100000 forked children until the machine and the server's
    # connections ran out.
    with pytest.raises(CommandError, match=f"--processes must be 1 to 256, not {processes}"):
        call_command("runworker", processes=processes, burst=True)
