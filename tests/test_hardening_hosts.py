"""Host names no row or connection can carry are refused where they come in, naming the fix.

A ``PGJOBS["HOST_NAME"]`` reaches each worker's and scheduler's ``application_name``
and their ``WorkerProcess`` row: a NUL used to fail at connect with libpq's error, a
name over 255 characters at the first insert. ``stopworker --host`` with a NUL
failed in its query, with psycopg's words.
"""

from __future__ import annotations

import io
import socket
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_pgjobs import conf, inline
from django_pgjobs.checks import check_settings
from django_pgjobs.liveness import harden_connections
from django_pgjobs.models import WorkerProcess
from tests.factories import WorkerProcessFactory

ODD_NAMES = [
    pytest.param("\x00", "contains a NUL character", id="nul"),
    pytest.param("web\x001", "contains a NUL character", id="nul-inside"),
    pytest.param("", "must be 1 to 255 characters, not 0", id="empty"),
    pytest.param("   ", "must not be only white space", id="spaces"),
    pytest.param(" \t\n", "must not be only white space", id="white-space"),
    pytest.param("web\n1", "unprintable characters, as '\\n'", id="newline"),
    pytest.param("web\x1b[31m1", "unprintable characters, as '\\x1b'", id="escape"),
    pytest.param("web\x7f", "unprintable characters, as '\\x7f'", id="delete"),
    pytest.param("web\u200b1", "unprintable characters, as '\\u200b'", id="zero-width"),
    pytest.param("web\ud8001", "contains a lone surrogate", id="surrogate"),
    pytest.param("w" * 256, "must be 1 to 255 characters, not 256", id="too-long"),
]


@pytest.mark.parametrize("name, problem", ODD_NAMES)
def test_the_system_check_names_the_setting_and_what_is_wrong(name, problem, settings):
    settings.PGJOBS = {"HOST_NAME": name}
    errors = check_settings()
    assert [error.id for error in errors] == ["pgjobs.E014"], errors
    assert errors[0].msg.startswith("PGJOBS['HOST_NAME'] ") and problem in errors[0].msg


@pytest.mark.parametrize("name, problem", ODD_NAMES)
def test_where_the_name_is_read_it_is_refused_in_the_same_words(name, problem, settings):
    settings.PGJOBS = {"HOST_NAME": name}
    [error] = check_settings()
    with pytest.raises(ImproperlyConfigured) as refused:
        conf.host_name()
    assert str(refused.value) == error.msg


@pytest.mark.parametrize("name", ["web-1", "Web 1.example.org", "hôte-é", "w" * 255])
def test_names_a_row_and_a_connection_can_carry_pass(name, settings):
    settings.PGJOBS = {"HOST_NAME": name}
    assert check_settings() == []
    assert conf.host_name() == name


def test_none_is_the_machines_hostname(settings):
    settings.PGJOBS = {"HOST_NAME": None}
    assert check_settings() == [] and conf.host_name() == socket.gethostname()


@pytest.mark.django_db
def test_a_worker_refuses_before_it_connects_or_writes(settings):
    settings.PGJOBS = {"HOST_NAME": "web\x001"}
    with pytest.raises(ImproperlyConfigured, match="PGJOBS\\['HOST_NAME'\\] contains a NUL"):
        harden_connections("default", "worker")
    with pytest.raises(ImproperlyConfigured, match="PGJOBS\\['HOST_NAME'\\] contains a NUL"):
        inline.run_due()
    assert not WorkerProcess.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_runworker_exits_on_the_check_and_records_no_worker(worker_process):
    # An environment variable can't carry a NUL: white space stands for the odd names.
    process = worker_process(env={"PGJOBS_HOST_NAME": " \t "})
    assert process.wait(60) != 0
    output = process.output()
    assert "pgjobs.E014" in output and "PGJOBS['HOST_NAME'] must not be only white space" in output
    assert not WorkerProcess.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "host, problem",
    [
        pytest.param("web\x001", "--host contains a NUL character", id="nul"),
        pytest.param("", "--host must be 1 to 255 characters, not 0", id="empty"),
        pytest.param("w" * 256, "--host must be 1 to 255 characters, not 256", id="too-long"),
        pytest.param(" ", "--host must not be only white space", id="white-space"),
        pytest.param("web\n1", "--host must not contain control", id="newline"),
    ],
)
def test_stopworker_refuses_a_host_no_worker_can_have_and_flags_nobody(host, problem):
    worker = WorkerProcessFactory(host="web")
    with pytest.raises(CommandError) as refused:
        call_command("stopworker", "--host", host)
    assert str(refused.value).startswith(problem), refused.value
    assert "no worker process records such a host" in str(refused.value)
    # Nothing written, and the caller's transaction still takes queries.
    assert not WorkerProcess.objects.filter(stop_requested=True).exists()
    call_command("stopworker", "--host", worker.host, stdout=io.StringIO())
    assert WorkerProcess.objects.get(pk=worker.pk).stop_requested


@pytest.mark.django_db
@pytest.mark.parametrize(
    "host, problem",
    [
        pytest.param("web\udcff", "--host contains a lone surrogate", id="undecodable-byte"),
        pytest.param("web\u202e1", "--host must not contain control", id="bidi-override"),
        pytest.param("web\u200b1", "--host must not contain control", id="zero-width-space"),
        pytest.param("\u00e9" * 256, "--host must be 1 to 255 characters, not 256", id="long"),
    ],
)
def test_stopworker_refuses_unicode_no_worker_can_record_and_flags_nobody(host, problem):
    """A byte the terminal's encoding can't read reaches argv as a lone surrogate; a
    direction override or a zero-width space would make the host look like another."""
    WorkerProcessFactory(host="web1")
    with pytest.raises(CommandError) as refused:
        call_command("stopworker", "--host", host)
    assert str(refused.value).startswith(problem), refused.value
    assert not WorkerProcess.objects.filter(stop_requested=True).exists()


@pytest.mark.django_db
def test_stopworker_stops_the_workers_of_a_unicode_host_of_255_characters():
    host = "\u5b57" * 255  # characters, as varchar(255) counts them: 765 bytes of UTF-8
    worker = WorkerProcessFactory(host=host)
    other = WorkerProcessFactory(host="web")
    out = io.StringIO()
    call_command("stopworker", "--host", host, stdout=out)
    assert out.getvalue() == "asked 1 worker process(es) to stop\n"
    assert WorkerProcess.objects.get(pk=worker.pk).stop_requested
    assert not WorkerProcess.objects.get(pk=other.pk).stop_requested


@pytest.mark.django_db
def test_stopworker_says_a_worker_it_asks_is_stale():
    """A worker killed with SIGKILL keeps its row until a rescue pass: "asked 1 worker
    process(es) to stop" of it read as if a worker ran and would stop."""
    gone = WorkerProcessFactory(heartbeat_at=timezone.now() - timedelta(minutes=4))
    WorkerProcessFactory()  # alive
    out = io.StringIO()
    call_command("stopworker", "--all", stdout=out)
    assert out.getvalue() == (
        "asked 2 worker process(es) to stop; 1 of them has sent no heartbeat for over 1m "
        "(WORKER_STALE_AFTER): likely gone already, its jobs rescued and its row removed "
        "by a running worker or scheduler\n"
    )
    out = io.StringIO()
    call_command("stopworker", str(gone.pk), stdout=out)
    assert out.getvalue().startswith("the 1 worker process(es) given were already asked")
    assert out.getvalue().endswith("; 1 of them has sent no heartbeat for over 1m "
        "(WORKER_STALE_AFTER): likely gone already, its jobs rescued and its row removed "
        "by a running worker or scheduler\n")  # fmt: skip


@pytest.mark.django_db
def test_stopworker_says_which_workers_were_already_stopping():
    """Its words, "asked 0 worker process(es) to stop", read as if none were there to stop.
    Nor does a worker asked stop "at its next heartbeat": it stops as on SIGTERM, its
    running jobs given up to SHUTDOWN_TIMEOUT."""
    first, second = WorkerProcessFactory(host="web1"), WorkerProcessFactory(host="web1")
    third = WorkerProcessFactory(host="web2")

    def said(*args):
        out = io.StringIO()
        call_command("stopworker", *args, stdout=out)
        return out.getvalue()

    assert said(str(first.pk)) == "asked 1 worker process(es) to stop\n"
    assert said("--host", "web1") == (
        "asked 1 worker process(es) to stop; 1 more already asked to stop\n"
    )
    assert said("--host", "web1") == (
        "the 2 worker process(es) on host 'web1' were already asked to stop: "
        "each stops once its running jobs finish, or hands them back after 30s "
        "(SHUTDOWN_TIMEOUT), if not already gone\n"
    )
    assert said(str(first.pk), str(second.pk)) == (
        "the 2 worker process(es) given were already asked to stop: "
        "each stops once its running jobs finish, or hands them back after 30s "
        "(SHUTDOWN_TIMEOUT), if not already gone\n"
    )
    assert said("--all") == "asked 1 worker process(es) to stop; 2 more already asked to stop\n"
    assert said("--all") == (
        "all 3 worker process(es) were already asked to stop: "
        "each stops once its running jobs finish, or hands them back after 30s "
        "(SHUTDOWN_TIMEOUT), if not already gone\n"
    )
    assert WorkerProcess.objects.get(pk=third.pk).stop_requested


@pytest.mark.django_db
def test_stopworker_names_hosts_that_differ_only_in_unicode_form_or_case():
    """'é' as one character and as e and an accent look the same: "no worker process on
    host 'é'" while the admin lists a worker on host 'é' said nothing of why."""
    WorkerProcessFactory(host="caf\u00e9-1")  # NFC, as most systems write it
    WorkerProcessFactory(host="CAFE\u0301-1")
    WorkerProcessFactory(host="web")
    with pytest.raises(CommandError) as refused:
        call_command("stopworker", "--host", "cafe\u0301-1")  # NFD: e and a combining accent
    said = str(refused.value)
    assert said.startswith("no worker process on host 'cafe\u0301-1' ('cafe\\u0301-1')"), said
    assert "differ only in case or Unicode form" in said
    assert "('CAFE\\u0301-1')" in said and "('caf\\xe9-1')" in said and "'web'" not in said
    assert not WorkerProcess.objects.filter(stop_requested=True).exists()
    with pytest.raises(CommandError) as refused:
        call_command("stopworker", "--host", "elsewhere")
    assert str(refused.value) == "no worker process on host 'elsewhere'"
