"""./dev, the newcomer's entry point: a bare call prints usage, and the demo never leaves
its worker and scheduler running, however it ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from django_pgjobs import Job
from tests import conftest

pytestmark = [pytest.mark.slow]

DEV = conftest.ROOT / "dev"


def test_a_bare_dev_prints_usage_and_runs_nothing():
    done = subprocess.run([DEV], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "usage: ./dev COMMAND" in done.stderr and "demo [--port PORT]" in done.stderr
    wrong = subprocess.run([DEV, "tset"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "usage:" in wrong.stderr


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.django_db(transaction=True)
def test_a_demo_that_fails_leaves_no_process_behind(tmp_path, wait):
    busy = socket.create_server(("127.0.0.1", 0))  # the port runserver wants is taken
    port = busy.getsockname()[1]
    marker = f"PGJOBS_DEMO_MARKER={uuid.uuid4()}"
    env = {**os.environ, **conftest.test_database_env(), marker.split("=")[0]: marker.split("=")[1]}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        done = subprocess.run(
            [DEV, "demo", "--port", str(port)],
            cwd=conftest.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        busy.close()
    assert done.returncode != 0, done.stdout + done.stderr
    assert "enqueued 13 demo jobs, one every 5s" in done.stdout, done.stdout + done.stderr
    # runserver's "That port is already in use." alone left the newcomer to find --port.
    assert f"port {port} is taken: ./dev demo --port {port + 1}" in done.stderr, done.stderr
    # The worker and scheduler it started are gone (SIGTERM: they stop within seconds).
    wait(lambda: not processes_with(marker), timeout=45)
    # Its jobs are spread over the first minute.
    runs = sorted(Job.objects.values_list("run_at", flat=True))
    assert (runs[-1] - runs[0]).total_seconds() >= 55


def test_the_demo_registers_its_own_tasks_not_the_test_suites():
    # The demo's admin listed the test suite's 53 tasks in its "By task" filter.
    script = (
        "from django.conf import settings; from django_pgjobs.tasks import registered_tasks; "
        "names = set(registered_tasks()); "
        "print(sorted(n for n in names if n.startswith('tests.'))); "
        "print(all(s['task'] in names for s in settings.PGJOBS['SCHEDULES'].values()))"
    )
    env = {**os.environ, **conftest.test_database_env(), "PGJOBS_DEMO": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["[]", "True"], done.stdout
    assert "export PGJOBS_DEMO=1" in DEV.read_text()
