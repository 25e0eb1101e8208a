"""Tasks only the tests use."""

import ctypes
import os
import signal
import sys
import threading
import time
import weakref

from django.db.backends.signals import connection_created

from django_pgjobs import DiscardJob, Snooze, isolation, signals, task
from django_pgjobs.context import current_job
from testproject.demo.tasks import record


@task
def give_up() -> None:
    raise DiscardJob("the input is not worth retrying")


@task
def exits() -> None:
    sys.exit(3)


@task
def slow_on_first_run(tag: str, seconds: float) -> int:
    """Record the start; sleep on the first run only (before any rescue); record the end.

    Returns the run: 1, plus one for each time a worker was lost holding the job.
    """
    context = current_job()
    run = 1 + isolation.crashes(context.job) if context else 0
    record(f"{tag}:start:{run}")
    if run == 1:
        time.sleep(seconds)
    record(f"{tag}:end:{run}")
    return run


@task(max_attempts=3, backoff={"strategy": "fixed", "base": 0.2, "jitter": 0})
def poison(how: str) -> None:
    """Kill the process running it, each time."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    raise ValueError(f"unknown way to die: {how!r}")


@task(max_attempts=3)
def recorded_pid(tag: str) -> int:
    """Record the run, return the pid of the process that ran it."""
    record(tag)
    return os.getpid()


@task
def busy(seconds: float) -> str:
    """Pure Python work: a timeout interrupts it at once."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return "finished"


@task
def blocked(seconds: float) -> str:
    """Blocked in C: an interrupt can't reach it until the sleep returns."""
    time.sleep(seconds)
    return "finished"


@task
def slow_to_start(tag: str, seconds: float) -> str:
    """Held ``seconds`` by a job_started receiver (below), before the task is called:
    where no timeout's interrupt reaches it. The receiver records "TAG:let-go" once
    it lets go, the task "TAG:end" if it runs."""
    return record(f"{tag}:end")


def _hold_slow_to_start(sender: object, job: object, **kwargs: object) -> None:
    if getattr(job, "task", None) == "tests.tasks_for_tests.slow_to_start":
        time.sleep(job.args[1])  # type: ignore[attr-defined]
        record(f"{job.args[0]}:let-go")  # type: ignore[attr-defined]


signals.job_started.connect(_hold_slow_to_start)


@task
def heard_by_broken_receivers(n: int) -> int:
    """Its job_started and job_completed receivers (below) raise; each records
    "started:N" / "completed:N" first."""
    return n


def _break_on_signal(sender: object, signal: object, job: object, **kwargs: object) -> None:
    if getattr(job, "task", None) == "tests.tasks_for_tests.heard_by_broken_receivers":
        which = "started" if signal is signals.job_started else "completed"
        record(f"{which}:{job.args[0]}")  # type: ignore[attr-defined]
        raise RuntimeError(f"a {which} receiver's own bug")


signals.job_started.connect(_break_on_signal)
signals.job_completed.connect(_break_on_signal)


@task
def until_cancelled(tag: str, limit: float = 30) -> str:
    """A long sync task that checks the cancellation flag between steps."""
    record(f"{tag}:start")
    until = time.monotonic() + limit
    while time.monotonic() < until:
        if current_job().cancelled:
            record(f"{tag}:saw-cancel")
            return "stopped early"
        time.sleep(0.01)
    return "ran to the end"


@task
def until_cancelled_raises(tag: str, limit: float = 30) -> str:
    """As docs/reliability.md shows it: raise_if_cancelled() between steps."""
    record(f"{tag}:start")
    until = time.monotonic() + limit
    while time.monotonic() < until:
        current_job().raise_if_cancelled()
        time.sleep(0.01)
    return "ran to the end"


@task(unique=True)
def unique_report(report_id: int | str) -> str:
    return f"report {report_id}"


@task(unique_for=3600)
def once_an_hour(name: str) -> str:
    return name


@task(unique=True)
def unique_export(report_id: int, fmt: str = "pdf", *, pages: int | None = None) -> str:
    """A unique task with defaults: every way of passing one call is one job."""
    return f"report {report_id} as {fmt}"


#: A default no JSON can hold: a call that leaves it out gives it no value to key on.
NOT_GIVEN = object()


@task(unique=True)
def unique_tagged(first: int, /, *rest: int, since: object = NOT_GIVEN, **labels: str) -> int:
    """A unique task of every kind of parameter."""
    return first + sum(rest)


@task(unique=True)
def unique_total(results: list[int], *, scale: int = 1) -> int:
    """A unique gather step: ``results`` comes from the worker, not the enqueue."""
    return sum(results) * scale


@task(unique_for=3600)
def once_an_hour_as(name: str, fmt: str = "pdf") -> str:
    return f"{name} as {fmt}"


@task
def enqueue_follow_up(n: int) -> int:
    """Enqueues another job, as tasks that fan out do."""
    from testproject.demo.tasks import add

    add.enqueue(n, n)
    return n


def _record_on(tag: str, using: str) -> None:
    from testproject.demo.models import Run

    Run.objects.using(using).create(tag=tag, pid=0)


@task
def record_on(tag: str, using: str = "default") -> str:
    _record_on(tag, using)
    return tag


@task
def leaves_atomic_open(tag: str, using: str = "default") -> None:
    """A bug: an atomic block entered and never left (no exception, no exit)."""
    from django.db import transaction

    transaction.atomic(using=using).__enter__()
    _record_on(tag, using)


@task
def leaves_begin_open(tag: str, using: str = "default") -> None:
    """A bug: a raw BEGIN never committed."""
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute("BEGIN")
    _record_on(tag, using)


@task
def leaves_autocommit_off(tag: str, using: str = "default") -> None:
    """A bug: autocommit turned off and never back on."""
    from django.db import transaction

    transaction.set_autocommit(False, using=using)
    _record_on(tag, using)


@task
async def async_leaves_atomic_open(tag: str, using: str = "default") -> None:
    """The same bug in an async task, whose ORM calls run on another thread."""
    from asgiref.sync import sync_to_async

    await sync_to_async(leaves_atomic_open.func)(tag, using)


@task
async def async_record(tag: str) -> str:
    """Writes through the async ORM; returns the name of the thread its ORM calls ran on."""
    import threading

    from asgiref.sync import sync_to_async

    from testproject.demo.models import Run

    await Run.objects.acreate(tag=tag, pid=0)
    return await sync_to_async(lambda: threading.current_thread().name)()


@task
def record_tenant(tag: str) -> str | None:
    """Record the tenant of tests.middleware_for_tests' own tenancy that the job runs in."""
    from tests.middleware_for_tests import current_tenant

    record(f"{tag}:{current_tenant()}")
    return current_tenant()


@task
def fan_out_to_tenants(tenants: list[str]) -> int:
    """What a cron job for every tenant does: enqueue one job inside each tenant."""
    from tests.middleware_for_tests import use_tenant

    for tenant in tenants:
        with use_tenant(tenant):
            record_tenant.enqueue("fanned")
    return len(tenants)


@task(isolated=True)
def isolated_pid(seconds: float = 0) -> int:
    """Runs in a child process of its own: returns that process's pid."""
    time.sleep(seconds)  # blocked in C: only killing its process stops it early
    return os.getpid()


@task
def takes_anything(*args: object, **kwargs: object) -> int:
    """Runs with whatever arguments it is given (the hardening tests' property tests)."""
    return len(args) + len(kwargs)


def _cyclic() -> list:
    value: list = [1]
    value.append(value)
    return value


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


#: What ``returns_odd`` and ``raises_odd`` make: values no JSON column can hold as they are.
ODD = {
    "nul": lambda: "a\x00b",
    "surrogate": lambda: "a\ud800b",
    "nan": lambda: float("nan"),
    "huge int": lambda: 10**5000,
    "cycle": _cyclic,
    "deep": lambda: _deep(5_000),
    "object": object,
    "nul key": lambda: {"a\x00": 1},
    "large": lambda: "x" * 2_000_000,
}


@task
def returns_odd(kind: str) -> object:
    return ODD[kind]()


@task
def raises_odd(kind: str) -> None:
    value = ODD[kind]() if kind in ODD else kind
    raise ValueError(value if isinstance(value, str) else f"{kind} \x00\ud800", value)


@task
def append_run(path: str, tag: str, seconds: float = 0) -> str:
    """Sleep ``seconds``, then append a line "job-id attempt tag" to the file ``path``:
    runs counted without the database (tests/test_server_restart.py stops it)."""
    time.sleep(seconds)
    context = current_job()
    job = context.job if context else None
    with open(path, "a") as runs:
        runs.write(f"{job.pk if job else '-'} {job.attempt if job else '-'} {tag}\n")
    return tag


@task(
    max_attempts=3,
    backoff={"strategy": "fixed", "base": 0.5, "jitter": 0},
    retry_on=ConnectionError,  # anything else it raises discards the job at once
)
def greet(name: str) -> str:
    """As a worker on older code has it: newer code takes a ``greeting`` too
    (tests/test_version_skew.py registers it in the enqueuing process)."""
    return f"hello {name}"


#: Set by a test to let ``snooze_once_then_wait``'s second run return.
RELEASE = threading.Event()


@task
def snooze_once_then_wait() -> str:
    """Snooze for 0 s on the first run; on the next, wait for RELEASE (10 s at most)."""
    context = current_job()
    if context is not None and "snoozed" not in context.job.meta:
        raise Snooze(0)
    RELEASE.wait(10)
    return "done"


@task
def raises_message(message: str) -> None:
    """Raises ValueError(message) as it is: a server's answer may hold line breaks."""
    raise ValueError(message)


@task
def call_in_a_transaction(payload=None, connector=None):
    """Calls its connector inside a transaction of its own, which the connector's
    ConnectorThrottled rolls back as it leaves (test_connector_backpressure)."""
    from django.db import transaction

    with transaction.atomic():
        return connector.call(payload)


@task
def linger_after_a_throttle(seconds, connector=None):
    """Calls its connector inside a transaction of its own (rolled back as the
    ConnectorThrottled leaves it), then holds the exception ``seconds`` before it
    lets it go: slow work after the answer (test_connector_backpressure)."""
    from django.db import transaction

    from django_pgjobs.connectors import ConnectorThrottled

    try:
        with transaction.atomic():
            return connector.call(None)
    except ConnectorThrottled:
        time.sleep(seconds)
        raise


@task
def call_another_connector(name, connector=None):
    """Calls connector ``name``, not its own (test_connector_backpressure)."""
    from django_pgjobs.connectors import get_connector

    return get_connector(name).call(None)


@task
def call_named_in_a_transaction(name):
    """Calls connector ``name`` (the job names none) inside a transaction of its own,
    which the connector's ConnectorThrottled rolls back as it leaves."""
    from django.db import transaction

    from django_pgjobs.connectors import get_connector

    with transaction.atomic():
        return get_connector(name).call(None)


#: Every Django connection this process made (each thread has its own), for
#: ``most_queries_logged``.
_CONNECTIONS: weakref.WeakSet = weakref.WeakSet()


def _keep_connection(sender: object, connection: object, **kwargs: object) -> None:
    _CONNECTIONS.add(connection)


connection_created.connect(_keep_connection)


@task
def most_queries_logged() -> int:
    """The most statements any thread's Django connection holds in its query log
    (kept while DEBUG is on), in this process."""
    return max((len(c.queries_log) for c in list(_CONNECTIONS)), default=0)


@task
def ticking(path: str, seconds: float) -> str:
    """Append "pid time" to the file ``path`` every 10 ms for ``seconds``, in Python
    (no cancellation flag looked at): where and when it ran. Lines of two processes
    interleaved in time mean it ran twice at once."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with open(path, "a") as ticks:
            ticks.write(f"{os.getpid()} {time.time()}\n")
        time.sleep(0.01)
    return "done"


@task(isolated=True)
def ticking_alone(path: str, seconds: float) -> str:
    """``ticking`` in a child process of its own."""
    return ticking.func(path, seconds)


@task(isolated=True, max_attempts=1)
def dies_alone(seconds: float) -> None:
    """In a child process of its own, dies after ``seconds`` without an outcome."""
    time.sleep(seconds)
    os._exit(3)
