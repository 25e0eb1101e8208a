"""Workers and schedulers on several hosts: rescue, the kill switch, exactly-once cron
and queue concurrency limits hold across them.

Each simulated host's processes record a name of their own (``PGJOBS["HOST_NAME"]``,
through the test project's ``PGJOBS_HOST_NAME``). Where the machine allows it, host
``a`` is more than a name: its processes run in a network namespace of their own, with
their own hostname (a UTS namespace, so the default of ``HOST_NAME`` is what names
them), and reach PostgreSQL over a veth pair through a forwarder in the root namespace,
as a worker on another machine would.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from django_pgjobs import Job
from django_pgjobs.models import SchedulerProcess, ScheduleTick, WorkerProcess
from django_pgjobs.states import JobState
from testproject.demo.models import Run
from tests import conftest
from tests.admin_helpers import action, changelist
from tests.conftest import FAST_RESCUE
from tests.factories import ScheduleFactory
from tests.pgproxy import PgProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@dataclass
class Netns:
    """A network namespace joined to the root one by a veth pair, with a forwarder to
    PostgreSQL on the root side's address."""

    name: str
    #: Where the namespace's processes reach PostgreSQL: the forwarder.
    address: str
    port: int

    def database_url(self) -> str:
        """The test database's URL, through the forwarder (the test database exists
        only once a test runs: a module fixture would see the settings' name)."""
        url = urlsplit(conftest.test_database_env()["DATABASE_URL"])
        user = url.netloc.rpartition("@")[0]
        return urlunsplit(url._replace(netloc=f"{user}@{self.address}:{self.port}"))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def network_namespace() -> Iterator[Netns | str]:
    """A namespace, or why there can't be one here (not root, no ``ip``...)."""
    settings = connection.settings_dict
    if (settings["HOST"] or "/").startswith("/"):
        yield "PostgreSQL is reached over a Unix socket"
        return
    pid = os.getpid()
    name, outside, inside = f"pgjobs-hosts-{pid}", f"pgjh{pid}o", f"pgjh{pid}i"
    subnet = f"10.{200 + pid % 50}.{pid // 50 % 256}"
    proxy = None
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{subnet}.1/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", name, "addr", "add", f"{subnet}.2/30", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        proxy = PgProxy((settings["HOST"], int(settings["PORT"] or 5432)), (f"{subnet}.1", 0))
        yield Netns(name, f"{subnet}.1", proxy.port)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        yield f"no network namespace here: {error} {detail.decode(errors='replace')}".strip()
    finally:
        if proxy is not None:
            proxy.close()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _ip("link", "del", outside)  # gone already if the namespace took its peer
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _ip("netns", "del", name)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns | str]:
    with network_namespace() as made:
        yield made


@dataclass
class Host:
    """A simulated host: its processes record ``name``; in ``netns``, if any."""

    name: str
    netns: Netns | None
    processes: list[conftest.WorkerProcess] = field(default_factory=list)

    def start(
        self, command: str, *args: str, env: dict[str, str] | None = None
    ) -> conftest.WorkerProcess:
        env = dict(env or {})
        prefix: list[str] = []
        if self.netns is None:
            env["PGJOBS_HOST_NAME"] = self.name
        else:
            env["DATABASE_URL"] = self.netns.database_url()
            # The hostname of its own namespace names it (HOST_NAME's default).
            script = 'hostname "$0" && exec "$@"'
            prefix = ["ip", "netns", "exec", self.netns.name, "unshare", "--uts"]
            prefix += ["sh", "-c", script, self.name]
        process = conftest.WorkerProcess(*args, env=env, command=command, prefix=prefix)
        self.processes.append(process)
        return process


@pytest.fixture
def hosts(netns: Netns | str, transactional_db: None) -> Iterator[Callable[[str], Host]]:
    """``hosts("a")``: host ``a`` runs in the network namespace when there is one."""
    made: list[Host] = []

    def make(name: str) -> Host:
        namespace = netns if isinstance(netns, Netns) and name == "a" else None
        host = Host(f"host-{name}-{os.getpid()}", namespace)
        made.append(host)
        return host

    yield make
    for host in made:
        for process in host.processes:
            if process.proc.poll() is None:
                process.stop(signal.SIGKILL, timeout=10)


def worker_hosts() -> set[str]:
    return set(WorkerProcess.objects.values_list("host", flat=True))


def listening_workers() -> int:
    """Worker processes listening on the control channel: a stop request reaches them
    at once (one notified before would wait for their next heartbeat)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'pgjobs worker %%listen' AND state = 'idle'"
            # LISTEN pgjobs_jobs, then LISTEN pgjobs_control; later, probes.
            " AND query <> '' AND query NOT LIKE '%%pgjobs_jobs%%'"
        )
        return cursor.fetchone()[0]


def test_a_host_in_a_network_namespace_reaches_postgresql_only_through_its_veth(netns):
    if not isinstance(netns, Netns):
        pytest.skip(netns)
    probe = "import socket; socket.create_connection(({!r}, {}), timeout=2)"
    port = connection.settings_dict["PORT"] or 5432
    direct = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c", probe.format("127.0.0.1", port)],
        capture_output=True,
        timeout=10,
    )
    assert direct.returncode != 0  # its loopback is its own
    forwarded = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns.name,
            sys.executable,
            "-c",
            probe.format(netns.address, netns.port),
        ],
        capture_output=True,
        timeout=10,
    )
    assert forwarded.returncode == 0, forwarded.stderr


def test_the_jobs_of_a_host_whose_workers_are_killed_complete_once_on_another_host(hosts, wait):
    doomed, rescuer = hosts("a"), hosts("b")
    jobs = [
        Job.enqueue("tests.tasks_for_tests.slow_on_first_run", args=[f"j{n}", 60]) for n in range(4)
    ]
    for _ in range(2):
        doomed.start("runworker", "--concurrency", "2", "--prefetch", "0", env=FAST_RESCUE)
    started = {f"j{n}:start:1" for n in range(4)}
    wait(lambda: started <= set(Run.objects.values_list("tag", flat=True)), timeout=60)
    assert worker_hosts() == {doomed.name}
    for process in doomed.processes:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    helper = rescuer.start("runworker", "--concurrency", "4", env=FAST_RESCUE)
    done = Job.objects.filter(pk__in=[j.pk for j in jobs], state=JobState.COMPLETED)
    wait(lambda: done.count() == 4, timeout=60)

    assert worker_hosts() == {rescuer.name}  # the dead host's rows went with the rescue
    for job in Job.objects.filter(pk__in=[j.pk for j in jobs]):
        assert job.attempt == 1 and job.result == 2 and job.meta["crashes"] == 1
    ends = sorted(Run.objects.filter(tag__contains=":end:").values_list("tag", flat=True))
    assert ends == [f"j{n}:end:2" for n in range(4)]  # each ran to its end exactly once
    assert helper.stop() == 0


def test_the_kill_switch_reaches_workers_on_every_host(hosts, wait, admin_client):
    # Heartbeats every 30 s: a worker stops within the deadline only if the
    # notification reached it over its host's own connection.
    quiet = {"PGJOBS_HEARTBEAT_INTERVAL": "30", "PGJOBS_WORKER_STALE_AFTER": "90"}
    a, b, c = hosts("a"), hosts("b"), hosts("c")
    for host in (a, b, b, c):
        host.start("runworker", "--concurrency", "1", env=quiet)
    wait(lambda: listening_workers() == 4, timeout=60)
    assert worker_hosts() == {a.name, b.name, c.name}

    call_command("stopworker", "--host", b.name, stdout=open(os.devnull, "w"))  # noqa: SIM115
    for process in b.processes:
        assert process.wait(15) == 0
    assert all(p.proc.poll() is None for p in a.processes + c.processes)
    assert worker_hosts() == {a.name, c.name}

    # The admin's action on the rows left (stopworker --all calls the same function).
    rows = WorkerProcess.objects.all()
    page = admin_client.post(changelist("workerprocess"), action("stop_workers", *rows))
    assert page.status_code == 302
    for process in a.processes + c.processes:
        assert process.wait(15) == 0
    assert not WorkerProcess.objects.exists()


def test_schedulers_on_three_hosts_fire_each_second_once_and_survive_one_host_dying(hosts, wait):
    every = ScheduleFactory(cron="* * * * * *")
    a, b, c = hosts("a"), hosts("b"), hosts("c")
    for host in (a, b, c):
        host.start("runscheduler", "--no-maintenance")
    ticks = ScheduleTick.objects.filter(schedule=every)
    wait(lambda: ticks.count() >= 5, timeout=60)
    wait(lambda: SchedulerProcess.objects.count() == 3, timeout=60)
    assert set(SchedulerProcess.objects.values_list("host", flat=True)) == {a.name, b.name, c.name}

    os.kill(b.processes[0].pid, signal.SIGKILL)  # a host dies: the others keep the beat
    b.processes[0].wait(10)
    before = ticks.count()
    wait(lambda: ticks.count() >= before + 5, timeout=30)
    assert a.processes[0].stop() == 0 and c.processes[0].stop() == 0

    seconds = list(ticks.order_by("fire_at").values_list("fire_at", flat=True))
    assert [y - x for x, y in itertools.pairwise(seconds)] == [timedelta(seconds=1)] * (
        len(seconds) - 1
    ), "a second was skipped or fired twice"
    assert Job.objects.filter(meta__schedule=every.name).count() == len(seconds)
    assert ticks.filter(job__isnull=True).count() == 0


def test_a_queue_concurrency_limit_holds_across_hosts(hosts, wait):
    # The test project's "mail" queue runs at most 2 jobs at once, whoever runs them;
    # workers that poll often keep trying for a free place. Each host runs one job at
    # a time, so two at once are on two hosts: with room for four each, the host whose
    # job had just ended took the free place first every time on a loaded box, and
    # one host ran every job (the limit never held across hosts).
    for name in "abc":
        hosts(name).start(
            "runworker",
            "--queues",
            "mail",
            "--concurrency",
            "1",
            "--prefetch",
            "0",
            env={"PGJOBS_POLL_INTERVAL": "0.2"},
        )
    wait(lambda: WorkerProcess.objects.count() == 3, timeout=60)
    host_of = dict(WorkerProcess.objects.values_list("pk", "host"))
    ids = [
        Job.enqueue("tests.tasks_for_tests.blocked", args=[0.2], queue="mail").pk for _ in range(16)
    ]
    executing = Job.objects.filter(pk__in=ids, state=JobState.EXECUTING)
    done = Job.objects.filter(pk__in=ids, state=JobState.COMPLETED)
    samples: list[int] = []

    def all_done() -> bool:
        samples.append(executing.count())
        return done.count() == len(ids)

    wait(all_done, timeout=60)
    assert max(samples) == 2, samples
    ran_on = {host_of[worker_id] for worker_id in done.values_list("worker_id", flat=True)}
    assert len(ran_on) >= 2, ran_on  # three hosts wanting three places, two given


def test_stopworker_refuses_a_host_without_workers_and_flags_nobody(hosts, wait):
    hosts("b").start("runworker", "--concurrency", "1")
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    with pytest.raises(CommandError, match="no worker process on host 'elsewhere'"):
        call_command("stopworker", "--host", "elsewhere")
    with pytest.raises(CommandError, match="one of them"):
        call_command("stopworker", "--host", "elsewhere", "--all")
    assert not WorkerProcess.objects.filter(stop_requested=True).exists()
