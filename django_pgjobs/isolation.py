"""Running a job alone in a child process, so that whatever kills it is pinned on it.

A worker runs its jobs on the threads of one process: a job that kills that
process (SIGKILL, ``os._exit``, a segfault, the OOM killer) takes every job the
worker held down with it, and rescue can't tell which one did it. So rescue
counts the lost attempt against none of them and marks each a suspect (one more
``meta["crashes"]``, see sql/rescue.sql), and a worker runs a suspect here, in a
child process of its own: if the child dies, the job is the one that died; its
attempt counts and its error says how (``WorkerLost: the job's process died with
SIGKILL``). Bystanders of a poison job simply complete on their next run.

A child is never forked from the worker itself (its threads may hold locks). Under
``runworker --processes`` the supervisor forks it: single-threaded, Django loaded,
no connection open, so a child starts in a few milliseconds (supervisor.py). A
worker on its own uses multiprocessing's fork server, started at its first suspect,
which loads Django once (``django_pgjobs.forkserver``, about half a second); its
children then start in about ten milliseconds. Either way the child is handed the
job's id and lease, loads the job, runs it and writes its own outcome
(lease-checked, as a thread would); once it has ended, the worker reads the row and
fails the attempt itself only if the job is still held under its lease. A child
dies with its worker: no orphan runs on beside the rescued job's next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import wait
from typing import Any

from django.db import connections
from django.utils import timezone

from . import conf, logs, supervisor, transitions
from .context import JobContext
from .exceptions import JobTimeout, UnknownTask, WorkerLost
from .models import Job
from .states import JobState
from .stopsignals import ignore_stop_signals
from .tasks import get_task, registered_or_none
from .transitions import Outcome

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Seconds past its timeout after which an isolated job's process is killed (an
#: async task times itself out first and records that cleanly).
TIMEOUT_GRACE = 1.0

#: How often the waiting thread looks at a job's cancellation flag and deadline.
CHECK_EVERY = 0.05

#: Exit status of a child that could not set Django up: the job never started.
CANNOT_START = 86

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["django_pgjobs.forkserver"])


def crashes(job: Job) -> int:
    """How many times a worker was lost while holding ``job`` (rescue counts them)."""
    meta = job.meta
    count = meta.get("crashes") if isinstance(meta, dict) else None
    return count if type(count) is int else 0


def wanted(job: Job) -> bool:
    """Whether ``job`` must run alone: a worker was lost while holding it, or its
    task asks for it (``@task(isolated=True)``). Never one that can't run as its claim
    read it (its args too large to load: loaded.py): a child would read its row whole,
    and its thread fails it at once."""
    if getattr(job, "unreadable", None):
        return False
    return (crashes(job) > 0 or _asked_by_its_task(job)) and available()


def _asked_by_its_task(job: Job) -> bool:
    try:
        return get_task(job.task).isolated
    except UnknownTask:
        return False  # run() fails its attempt (retried: newer code may know it), on a thread


def available() -> bool:
    """Children set Django up from ``DJANGO_SETTINGS_MODULE`` (manage.py sets it)."""
    return bool(os.environ.get("DJANGO_SETTINGS_MODULE"))


def execute_alone(job: Job, clock: Clock = timezone.now) -> str:
    """``execution.execute`` for a suspect: run it in a child process, and write the
    outcome if the child could not. Returns the state the job ended in."""
    from .execution import record

    return record([run_alone(JobContext(job, isolated=True), clock)])[0]


def run_alone(context: JobContext, clock: Clock = timezone.now) -> Outcome | str:
    """Run the claimed job of ``context`` in a child process; wait for it to end.

    Returns an outcome for the caller to write when the child ended without
    writing one (it died, or was killed at its timeout), else the state the job
    is in now ("lost" if its lease was taken away). The calling thread kills the
    child when the job is cancelled (or handed back) or overruns its timeout.
    """
    job = context.job
    child = _start(job)
    context.started = time.monotonic()
    deadline = None if job.timeout is None else context.started + job.timeout + TIMEOUT_GRACE
    killed_at_timeout = given_up = False
    while not child.ended(CHECK_EVERY):
        overdue = deadline is not None and time.monotonic() > deadline
        if context.cancelled or overdue:
            killed_at_timeout = overdue and not context.cancelled
            given_up = context.cancelled
            child.kill()
            child.ended(None)
            break
    if child.exitcode == CANNOT_START:
        logger.error(
            "job %s: its child process could not set Django up (see its output); "
            "running it on this worker's thread instead",
            job.pk,
        )
        from .execution import run

        return run(job, clock, context)
    return _verdict(job, child.exitcode, killed_at_timeout, clock, given_up)


class _ForkServerChild:
    """A child forked by multiprocessing's fork server (a worker on its own)."""

    def __init__(self, request: str) -> None:
        self._process = _context.Process(
            target=_forkserver_child, args=(request, _database_settings()), daemon=False
        )
        self._process.start()

    def ended(self, timeout: float | None) -> bool:
        if not wait([self._process.sentinel], timeout):
            return False
        self._process.join()
        return True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            self._process.kill()

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode


def _start(job: Job) -> _ForkServerChild | supervisor.Launched:
    """A child process running ``job``: forked by the supervisor of ``--processes``
    (single-threaded, Django loaded: a few milliseconds), else by the fork server."""
    request = json.dumps([job.pk, str(job.lease), job._state.db or conf.get("DATABASE")])
    if supervisor.can_launch():
        try:
            return supervisor.launch(request)
        except OSError as error:  # the supervisor is gone
            logger.warning(
                "the supervisor can't start job %s (%s); using a fork server", job.pk, error
            )
    return _ForkServerChild(request)


def _verdict(
    job: Job, exitcode: int | None, killed_at_timeout: bool, clock: Clock, given_up: bool = False
) -> Outcome | str:
    """What became of ``job`` once its process ended with ``exitcode`` (killed as it
    was ``given_up``: cancelled)."""
    from .execution import through_outage

    # On a new connection if need be: the thread's sat idle while the child ran, and
    # may have been ended meanwhile (idle_session_timeout, pg_terminate_backend, a
    # restart). The read failed: "crashed", the child's death unrecorded.
    rows = Job.objects.using(job._state.db).filter(pk=job.pk).values_list("state", "lease")
    read = through_outage(lambda: [rows.first()], f"read what job {job.pk}'s process did")
    if read is None:
        return "unrecorded"  # the database stayed away: executing under our lease
    [row] = read
    if row is None:
        return "lost"  # deleted meanwhile
    state, lease = row
    if state != JobState.EXECUTING or lease != job.lease:
        # The child wrote its outcome, or the lease was taken away (cancelled,
        # handed back, rescued): either way nothing is ours to write.
        # (Scheduled: the child snoozed it.)
        ended = {JobState.COMPLETED, JobState.RETRYABLE, JobState.DISCARDED, JobState.SCHEDULED}
        return state if state in ended else "lost"
    if given_up:
        # Cancelled with its lease still ours: a stopping worker gave up on it, and
        # hands it back once its child is gone (an operator's cancel clears the lease
        # first). No failed attempt: its process was killed by us, for the stop.
        return "lost"
    if exitcode is None:  # its supervisor went away first: nothing is known
        return "handed back" if transitions.hand_back(job) else "lost"
    if killed_at_timeout:
        error: BaseException = JobTimeout.exceeded(job.timeout, "; its process was killed")
    else:
        error = WorkerLost(f"the job's process {_how_it_ended(exitcode)}")
    logger.warning(
        "job %s (%s) attempt %s: %s", job.pk, logs.printable(job.task), job.attempt, error
    )
    from .execution import failed_attempt

    return failed_attempt(job, error, clock(), registered_or_none(job.task))


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"died with {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"died with signal {-exitcode}"
    return f"exited with status {exitcode} without recording an outcome"


def _database_settings() -> dict[str, dict[str, Any]]:
    """This process's database settings as they are now (a test run renames its
    database after settings were read), for the child to connect to the same."""
    return {alias: dict(connections[alias].settings_dict) for alias in connections}


# -- in the child ---------------------------------------------------------------------


def run_in_child(request: str) -> int:
    """In the child process: run the job ``request`` names, if it is still held under
    the lease it names, and write its outcome. Returns the exit status."""
    _first_for_the_oom_killer()
    job_id, lease, using = json.loads(request)
    job = Job.objects.using(using).filter(pk=job_id, state=JobState.EXECUTING, lease=lease).first()
    if job is not None:  # else lost meanwhile (cancelled, handed back)
        from .execution import execute

        execute(job, timezone.now)
    connections.close_all()
    return 0


def _forkserver_child(request: str, databases: dict[str, dict[str, Any]]) -> None:
    """A fork server's child: connect as the worker does, then run the job."""
    # Again, though the fork server ignores them: multiprocessing gives its children
    # SIGINT back. First thing: the worker kills it once it is gone (_die_with_worker).
    ignore_stop_signals()
    _die_with_worker()
    try:
        _set_django_up(databases)
    except Exception:
        logger.exception("isolated job: could not set Django up")
        os._exit(CANNOT_START)
    os._exit(run_in_child(request))


def _set_django_up(databases: dict[str, dict[str, Any]]) -> None:
    import django
    from django.apps import apps

    if not apps.ready:  # the fork server could not preload it
        django.setup()
    for alias, settings_dict in databases.items():
        connections[alias].settings_dict.update(settings_dict)


def _die_with_worker() -> None:
    """Be killed as soon as the worker that started this child is gone: its jobs
    are rescued and may run elsewhere, and this run's writes would be refused."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="pgjobs-watch-worker", daemon=True).start()


def _first_for_the_oom_killer() -> None:
    """Linux: if memory runs out, let the kernel kill this child rather than the worker."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("1000")
