"""runworker --processes' supervisor: children that fail to start are restarted ever
more slowly; children that stop cleanly are not restarted."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import os, signal, sys, threading
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
import django
django.setup()
from django_pgjobs.supervisor import run_processes

mode = sys.argv[1]
# A child that fails before registering a worker, or one that stops cleanly.
target = (lambda index: 1) if mode == "fail" else (lambda index: 0)
stop = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
stop.daemon = True
stop.start()
sys.exit(run_processes(1, target))
"""


def supervise(mode: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
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


def test_a_child_that_stops_cleanly_is_not_replaced():
    code, output = supervise("exit")
    assert code == 0 and "restarting" not in output, output
