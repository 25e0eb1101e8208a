"""SIGTERM, SIGINT and SIGHUP, for ``runworker`` and ``runscheduler``: a request to stop,
said once.

SIGHUP is the terminal hanging up (an ssh session or a tmux pane closed on a command
run in the foreground, or a stopped one's process group orphaned): its default action
killed the process outright, leaving its running jobs ``executing`` under a dead
worker until a rescue pass took them as a crash's. It stops as SIGTERM does.

One request to stop often arrives as two signals a moment apart: Ctrl-C, or systemd
stopping the whole cgroup, reaches a ``--processes`` child both directly and through
its parent, and coreutils ``timeout`` signals the command, then its whole process
group. Signals that close to the first are that same request, said and acted on
once. A later one is a new request (a worker's second hands its running jobs back).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

#: The signals that ask a worker or a scheduler to stop (a ``--processes`` supervisor
#: passes them on to its children).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: Signals closer together than this (seconds) are one request to stop.
SAME_SIGNAL_WITHIN = 1.0


def on_stop_signals(
    request_stop: Callable[[], None],
    logger: logging.Logger,
    heard: Callable[[int], None] | None = None,
    who: Callable[[], str | None] | None = None,
) -> None:
    """Call ``request_stop`` on SIGTERM, SIGINT and SIGHUP, after a line saying which came (and
    ``heard(signum)``, if given); nothing for one within SAME_SIGNAL_WITHIN of the
    first. ``who()`` names the process in that line once it has a name ("worker 3"):
    under ``--processes`` each child said a bare "received SIGTERM", none told apart."""
    first_at: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        now = time.monotonic()
        if first_at and now - first_at[0] < SAME_SIGNAL_WITHIN:
            return
        first_at.append(now)
        name = who() if who is not None else None
        if name:
            logger.info("%s: received %s", name, signal.Signals(signum).name)
        else:  # a signal before the process registered
            logger.info("received %s", signal.Signals(signum).name)
        if heard is not None:
            heard(signum)
        request_stop()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)


def ignore_stop_signals() -> None:
    """Let the stop signals pass this process by: a job's process, and the fork server
    that forks them. Ctrl-C or a hangup reaches the terminal's whole process group
    (systemd's default KillMode, every process of the unit), and the job died of it,
    its attempt counted, while its worker was letting running jobs finish. Its worker
    kills it when it hands the job back, or once it is gone."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
