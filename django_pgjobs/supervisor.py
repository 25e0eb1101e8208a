"""Running several worker processes from one command (``runworker --processes N``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger(__name__)


def run_processes(
    count: int,
    target: Callable[[int], int],
    after_fork: Callable[[list[int]], None] | None = None,
) -> int:
    """Fork ``count`` children running ``target(index)``; forward SIGTERM/SIGINT; wait for all.

    Returns 0 when every child exited 0. Children each open their own
    connections: the parent closes its own before forking. ``after_fork`` runs
    in the parent once every child is started (the place to start threads).
    """
    connections.close_all()
    children: list[int] = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = target(index)
            finally:
                os._exit(code)
        children.append(pid)
    if after_fork is not None:
        after_fork(children)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            logger.warning("worker process %s exited with %s", child, code)
        worst = worst or code
    return worst
