"""Running several worker processes from one command (``runworker --processes N``),
starting again those that die, and forking the children that run isolated jobs.

The supervisor forks its children before any of them starts a thread. A child
that ends without being asked to (killed by a signal, ``os._exit`` in a task, an
exit status other than 0) is replaced at once, and the jobs its worker held are
returned to the queue at once too (``rescue``), rather than after the stale limit:
the supervisor saw the process end, so nothing can be running them any more. Each
child tells the supervisor, through a pipe of its own, the id of the worker it
registered and that it stopped cleanly; a pipe outlives its writer, so even a
SIGKILLed child leaves its worker id behind. A child that keeps failing to start
(it dies before registering a worker) is restarted after a delay that doubles up
to ``MAX_RESTART_DELAY``. A child that stops cleanly (``--burst`` done,
``stopworker``) is not replaced.

The supervisor is single-threaded, has Django loaded and holds no connection
while it waits: the right process to fork a job that must run alone
(isolation.py). A child asks over a socket of its own (``launch``), handing it a
pipe; the supervisor forks the job's process, writes its pid into the pipe, and
its exit status once it has reaped it. The job processes of a child that dies are
killed with it.

A child whose supervisor dies without stopping it (SIGKILL, the OOM killer) stops as
on SIGTERM: nobody would restart, count or stop it any more, and a process manager
that starts the command again would run it beside a fresh set of children. A job
process it forked is killed once it is gone: its worker hands the job back, to run
again elsewhere. Both watch it the same way (``signal_when_gone``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections

from . import db, limits, logs, outage
from .stopsignals import STOP_SIGNALS

logger = logging.getLogger(__name__)

#: Delay before restarting a child that died before it registered its worker,
#: doubled each time it does so again.
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: How often a child waiting to kill a job process looks for its pid.
CHECK_PID_EVERY = 0.01
#: Most children one supervisor runs (runworker --processes): each opens database
#: connections of its own, and 100,000 made a fork bomb that exhausted the server's.
MAX_PROCESSES = 256

# -- in a child -------------------------------------------------------------------------

#: Where to tell the supervisor about itself (None when unsupervised).
_report_fd: int | None = None
#: Where to ask the supervisor for a job process (None when unsupervised).
_launcher: socket.socket | None = None
_launcher_lock = threading.Lock()


def announce(message: str) -> None:
    """In a supervised child, tell the supervisor ``message`` (one line); else nothing."""
    if _report_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_report_fd, f"{message}\n".encode())


def heard(signum: int) -> None:
    """In a supervised child, tell the supervisor a stop signal came (``signal:SIGTERM``):
    it stops cleanly all the same, but one the supervisor did not send is no stop the
    supervisor asked for (nor stopworker's) and the child is replaced."""
    announce(f"signal:{_name(signum)}")


#: How often a process without a pidfd (not Linux 5.3+) looks for its supervisor.
ORPHAN_POLL_SECONDS = 0.5


def signal_when_gone(parent: int, signum: int, why: str = "") -> threading.Thread:
    """Send this process ``signum`` once the supervisor ``parent`` has gone away, and
    log ``why`` (if given) first: a child stops as on SIGTERM (nobody would restart,
    count or stop it any more); a job process dies (``SIGKILL``: its worker, told
    nothing of how the job ended, hands the job back to run elsewhere; left running,
    it would run alongside, unsupervised and past any timeout: its writes refused by
    the lease, its side effects not). A fork server's child does the same
    (``isolation._die_with_worker``)."""

    def watch() -> None:
        with contextlib.suppress(AttributeError, OSError):  # a pidfd: Linux 5.3+
            watched = os.pidfd_open(parent)
            if os.getppid() == parent:  # opened while it lived: not a reused pid
                select.select([watched], [], [])
        while os.getppid() == parent:  # without a pidfd: look now and then
            time.sleep(ORPHAN_POLL_SECONDS)
        if why:
            logger.warning(why, parent)
        os.kill(os.getpid(), signum)

    watcher = threading.Thread(target=watch, name="pgjobs-watch-supervisor", daemon=True)
    watcher.start()
    return watcher


def can_launch() -> bool:
    """Whether this process is a supervised child, which can ask for job processes."""
    return _launcher is not None


def launch(request: str) -> Launched:
    """Ask the supervisor to fork a process running ``isolation.run_in_child(request)``."""
    assert _launcher is not None
    status_r, status_w = os.pipe()
    try:
        with _launcher_lock:
            socket.send_fds(_launcher, [request.encode()], [status_w])
    except OSError:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return Launched(status_r)


class Launched:
    """A job process the supervisor forked for this child: its pid, then its exit code."""

    def __init__(self, status_fd: int) -> None:
        self._fd: int | None = status_fd
        self._said = b""
        self.pid: int | None = None
        self.exitcode: int | None = None

    def ended(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: for good); True once it has ended.

        Ended without an exit code means the supervisor went away first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._fd is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._fd], [], [], left)[0]:
                return False
            chunk = os.read(self._fd, 256)
            self._said += chunk
            for line in self._said.decode().splitlines():
                word, _, value = line.partition(" ")
                if word == "pid":
                    self.pid = int(value)
                elif word == "exit":
                    self.exitcode = int(value)
            if not chunk or self.exitcode is not None:
                os.close(self._fd)
                self._fd = None
        return True

    def kill(self) -> None:
        while self.pid is None and self._fd is not None:  # it is written first, at once
            self.ended(CHECK_PID_EVERY)
        if self.pid is not None and self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


# -- in the supervisor ------------------------------------------------------------------


@dataclass
class Slot:
    """One of the ``count`` children: the process filling it now, and its history."""

    number: int
    pid: int | None = None
    report: int | None = None  # read end of the child's pipe
    launcher: socket.socket | None = None  # our end of the child's socket
    started: float = 0.0
    boot_failures: int = 0
    restart_at: float | None = None
    exit_code: int | None = None
    said: list[str] = field(default_factory=list)
    #: Job processes forked for this child: pid -> the pipe to report their end into.
    jobs: dict[int, int] = field(default_factory=dict)


class Supervisor:
    def __init__(
        self,
        count: int,
        target: Callable[[int], int],
        after_fork: Callable[[list[int]], None] | None = None,
        rescue: Callable[[list[int]], object] | None = None,
    ) -> None:
        self.slots = [Slot(n) for n in range(count)]
        self.target = target
        self.after_fork = after_fork
        self.rescue = rescue
        self.stopping = False
        self._stop_signum = signal.SIGTERM
        self._told: set[int] = set()  # children sent the stop signal
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    def run(self) -> int:
        """Run the children, replacing those that die, until all have stopped cleanly
        or SIGTERM/SIGINT (forwarded to them) stopped them. Returns 0 when every
        child's last process exited 0."""
        handlers = {
            signum: signal.signal(signum, handler)
            for signum, handler in (
                *((signum, self._stop) for signum in STOP_SIGNALS),
                (signal.SIGCHLD, lambda signum, frame: None),
            )
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            for slot in self.slots:
                if self.stopping:  # SIGTERM/SIGINT while starting: start no more
                    break
                self._start(slot)
            self._tell_untold()
            if self.after_fork is not None:
                self.after_fork([slot.pid for slot in self.slots if slot.pid is not None])
            while self._step():
                pass
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
        return next((slot.exit_code for slot in self.slots if slot.exit_code), 0)

    def _step(self) -> bool:
        """Reap, restart, serve launch requests, then wait; False once all is done."""
        self._reap()
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at and not self.stopping:
                self._start(slot)
        self._tell_untold()
        if all(slot.pid is None and not slot.jobs for slot in self.slots) and (
            self.stopping or all(slot.restart_at is None for slot in self.slots)
        ):
            return False
        pending = [s.restart_at - now for s in self.slots if s.restart_at is not None]
        timeout = max(0.0, min(pending)) if pending and not self.stopping else None
        launchers = {s.launcher: s for s in self.slots if s.launcher is not None}
        try:
            readable = select.select([self._wake_r, *launchers], [], [], timeout)[0]
        except InterruptedError:
            readable = []
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        for ready in readable:
            if ready in launchers:
                self._serve_launch(launchers[ready])
        return True

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping, self._stop_signum = True, signum
        for slot in self.slots:
            if slot.pid is not None:
                self._tell(slot.pid, signum)

    def _tell_untold(self) -> None:
        """Pass the stop on to children forked while it was being handled: one whose
        pid wasn't recorded yet when the signal came was never told, and the
        supervisor waited for it for ever."""
        if self.stopping:
            for slot in self.slots:
                if slot.pid is not None and slot.pid not in self._told:
                    self._tell(slot.pid, self._stop_signum)

    def _tell(self, pid: int, signum: int) -> None:
        self._told.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def _own_descriptors(self) -> list[int]:
        """What a process forked from the supervisor must close."""
        fds = [self._wake_r, self._wake_w]
        for slot in self.slots:
            if slot.report is not None:
                fds.append(slot.report)
            if slot.launcher is not None:
                fds.append(slot.launcher.fileno())
            fds.extend(slot.jobs.values())
        return fds

    def _forked(self, on_stop: signal.Handlers = signal.SIG_DFL) -> None:
        """In a new process: drop the supervisor's descriptors and signal handlers
        (``on_stop`` for the stop signals: a job's process ignores them)."""
        for fd in self._own_descriptors():
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for signum in STOP_SIGNALS:
            signal.signal(signum, on_stop)

    def _start(self, slot: Slot) -> None:
        """Fork a child into ``slot``. Connections are closed first: a child opens its own."""
        global _report_fd, _launcher
        connections.close_all()
        report_r, report_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Held back over the fork: a stop passed on to the child before it has put
        # back the default handlers ran the supervisor's own handler there, and the
        # child never stopped. Pending, it reaches the child's own handling.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(report_r)
                ours.close()
                self._forked()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                _report_fd, _launcher = report_w, theirs
                signal_when_gone(
                    os.getppid(),
                    signal.SIGTERM,
                    "the supervisor (pid %s) is gone: stopping this worker process",
                )
                try:
                    code = self.target(slot.number)
                except Exception as error:
                    # Said to the supervisor, for its restart line: the exception went
                    # down with the process, and "it failed to start" said no more.
                    announce(f"failed:{_why(error)}")
                    logger.debug("worker process %s failed", slot.number, exc_info=True)
                    raise
                announce("exit")
            finally:
                os._exit(code)
        slot.pid = pid
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        os.close(report_w)
        theirs.close()
        os.set_blocking(report_r, False)
        slot.report, slot.launcher = report_r, ours
        slot.started = time.monotonic()
        slot.restart_at, slot.said = None, []

    def _serve_launch(self, slot: Slot) -> None:
        """Fork the job process a child asked for (or notice the child is gone)."""
        try:
            request, fds, _, _ = socket.recv_fds(slot.launcher, 4096, 1)
        except OSError:
            request, fds = b"", []
        if not request or not fds:  # the child closed its end: it is gone
            for fd in fds:
                os.close(fd)
            if slot.launcher is not None:
                slot.launcher.close()
            slot.launcher = None
            return
        status = fds[0]
        connections.close_all()
        supervisor = os.getpid()
        # Held back over the fork, as for a worker's process (_start): here, ignored.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the job's process
            code = 1
            try:
                os.close(status)
                # Deaf to stop signals: Ctrl-C or a hangup reaches the terminal's
                # whole process group, systemd's default KillMode every process of
                # the unit, and the job died of it (an attempt counted) while its
                # worker was letting running jobs finish. Its worker kills it when it
                # hands the job back; it dies with the supervisor.
                self._forked(on_stop=signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                signal_when_gone(supervisor, signal.SIGKILL)
                from .isolation import run_in_child

                code = run_in_child(request.decode())
            except BaseException:
                logger.exception("isolated job %s crashed", request)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        slot.jobs[pid] = status
        with contextlib.suppress(OSError):
            os.write(status, f"pid {pid}\n".encode())

    def _reap(self) -> None:
        """Collect every ended process: children (restart them) and job processes."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            for slot in self.slots:
                if pid in slot.jobs:
                    fd = slot.jobs.pop(pid)
                    with contextlib.suppress(OSError):
                        os.write(fd, f"exit {code}\n".encode())
                    os.close(fd)
                elif slot.pid == pid:
                    if pid in self._told and code == -self._stop_signum:
                        # Stopped by the signal passed on before it could handle it (it
                        # was starting): the stop asked for, not a failure.
                        code = 0
                    slot.pid, slot.exit_code = None, code
                    self._after_exit(slot, pid)

    def _after_exit(self, slot: Slot, pid: int) -> None:
        for job_pid in slot.jobs:  # its isolated jobs die with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(job_pid, signal.SIGKILL)
        if slot.launcher is not None:
            slot.launcher.close()
            slot.launcher = None
        slot.said = _read_all(slot)
        code = slot.exit_code
        workers = [int(line[7:]) for line in slot.said if line.startswith("worker:")]
        clean = "exit" in slot.said and code == 0
        # A stop signal the child was sent, by name (it says so as it handles one).
        signalled = next((line[7:] for line in slot.said if line.startswith("signal:")), None)
        failed = next((line[7:] for line in slot.said if line.startswith("failed:")), None)
        if clean and (signalled is None or pid in self._told or self.stopping):
            return  # stopped cleanly (--burst done, stopworker, our stop): not replaced
        if clean:
            # Stopped cleanly by a signal someone else sent it (`kill -TERM <child>`):
            # it was taken for stopworker's stop, not replaced, and not said.
            how = f"was stopped by {logs.printable(signalled)} (not sent by the supervisor)"
        elif code and code < 0:
            how = f"was killed by {_name(-code)}"
        else:
            how = f"exited {code}"
        if self.rescue is not None and workers and not clean:  # nothing runs them now
            try:
                self.rescue(workers)
            except Exception as error:  # the stale limit will return them; don't die of it
                if not db.connection_trouble(error):
                    logger.exception("could not rescue the jobs of worker(s) %s at once", workers)
                else:  # the database away, likely why the child died: no traceback
                    logger.error(
                        "could not rescue the jobs of worker(s) %s at once (%s); a rescue "
                        "pass takes them once the worker's heartbeat is older than "
                        "WORKER_STALE_AFTER",
                        workers,
                        _why(error),
                    )
            finally:
                connections.close_all()
        if self.stopping:
            logger.warning("worker process %s (pid %s) %s while stopping", slot.number, pid, how)
            return
        # A child that died before it registered a worker failed to start (bad
        # settings, database away): wait longer each time. One that ran jobs is
        # replaced at once: a job that kills its worker does so once (then it runs
        # alone, see isolation.py).
        slot.boot_failures = 0 if workers else slot.boot_failures + 1
        delay = (
            min(FIRST_RESTART_DELAY * 2 ** (slot.boot_failures - 1), MAX_RESTART_DELAY)
            if slot.boot_failures
            else 0.0
        )
        slot.restart_at = time.monotonic() + delay
        logger.warning(
            "worker process %s (pid %s) %s after %.1fs; restarting it%s",
            slot.number,
            pid,
            how,
            time.monotonic() - slot.started,
            f" in {delay:.1f}s (it failed to start{f': {failed}' if failed else ''})"
            if delay
            else "",
        )


def run_processes(
    count: int,
    target: Callable[[int], int],
    after_fork: Callable[[list[int]], None] | None = None,
    *,
    rescue: Callable[[list[int]], object] | None = None,
) -> int:
    """Run ``count`` supervised children, each running ``target(index)``, index from 0
    (see ``Supervisor``; a replacement gets the index of the child it replaces).

    ``after_fork(pids)`` runs in the supervisor once the first children are started:
    the place to start threads (``--metrics-port``'s HTTP server). Replacements and
    job processes are forked beside those threads later; the child touches none of
    their locks or connections, and Python resets its own. ``rescue(worker_ids)``
    returns the jobs of a dead child's workers to the queue."""
    return Supervisor(count, target, after_fork, rescue).run()


def _why(error: BaseException) -> str:
    """``OperationalError: connection failed: ...``: the first line of ``error``, on one
    line of at most 500 characters (libpq's hints and DETAIL on lines of their own)."""
    line = f"{type(error).__name__}: {outage.describe(error)}"
    return logs.one_line(limits.shortened(line, 500))


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _read_all(slot: Slot) -> list[str]:
    """What the ended child said through its pipe; closes the pipe."""
    chunks = []
    while slot.report is not None:
        try:
            chunk = os.read(slot.report, 4096)
        except BlockingIOError:
            chunk = b""
        if not chunk:
            os.close(slot.report)
            slot.report = None
            break
        chunks.append(chunk)
    # By line: a line may hold spaces (why it failed).
    return b"".join(chunks).decode(errors="replace").splitlines()
