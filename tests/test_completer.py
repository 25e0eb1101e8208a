"""The modules moved out of the worker stand on their own: the worker owns a Completer
and a Claimer, never the other way round (one importing the worker would tie the
outcome writes, or the claims, back into the loop they were moved out of)."""

from __future__ import annotations

import ast
import logging
import re
import threading
from pathlib import Path

import pytest

import django_pgjobs


@pytest.mark.parametrize("module", ["completer.py", "claimer.py"])
def test_the_modules_moved_out_of_the_worker_do_not_import_it(module):
    source = Path(django_pgjobs.__file__).with_name(module).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module or ''}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not [name for name in imported if name.split(".")[-1] == "worker"], imported


@pytest.mark.django_db(transaction=True)
def test_a_completer_thread_a_bug_ends_stops_its_worker_loudly(threaded_worker, wait, caplog):
    """A bug of ours outside the completer's guarded writes ended its thread: the
    worker's slots stayed taken by outcomes no one would write, so it claimed nothing
    more, while its heartbeat kept it looking alive. It stops instead, saying why; its
    jobs go to rescue as a crashed worker's."""
    from django_pgjobs import Job
    from django_pgjobs.completer import Completer
    from django_pgjobs.models import WorkerProcess

    def broken(self: Completer, batch: list) -> None:
        raise TypeError("a bug of ours")

    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    worker = threaded_worker(poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Completer, "_write_batch", broken)
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
        wait(lambda: not thread.is_alive(), timeout=30)
    said = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(said) == 1 and re.search(
        r"the completer thread failed \(TypeError: a bug of ours\); the worker stops",
        said[0].getMessage(),
    ), [r.getMessage() for r in said]
    assert worker.exit_code == 1  # runworker's: a supervisor restarts it
    # Its row is gone: its job, whose outcome no one wrote, is a crashed worker's.
    assert not WorkerProcess.objects.filter(pk=worker.record.pk).exists()
