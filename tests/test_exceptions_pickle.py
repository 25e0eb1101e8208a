"""Every exception the package defines survives pickle whole: the same class, message,
args and attributes. They cross process boundaries (Django's parallel test runner,
multiprocessing, Sentry's and Celery-style error reporters): an exception whose
__init__ takes other arguments than it gives Exception was rebuilt from its message
alone, and failed (``ConnectorThrottled``: missing 'delay' and 'status') or came
back with its message wrapped twice (``UnknownQueue``)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import django_pgjobs
from django_pgjobs.connectors.command import CommandFailed, CommandResult, CommandTimeout
from django_pgjobs.connectors.errors import (
    ConnectorBusy,
    ConnectorError,
    ConnectorMisconfigured,
    ConnectorRefused,
    ConnectorThrottled,
    UnknownConnectorKind,
)
from django_pgjobs.connectors.http import HttpResponse, HttpStatusError
from django_pgjobs.connectors.smtp import SmtpPartlySent
from django_pgjobs.exceptions import (
    ArgumentMismatch,
    DiscardJob,
    InvalidArguments,
    InvalidOption,
    InvalidQueueName,
    JobCancelled,
    JobGone,
    JobTimeout,
    PayloadError,
    PgJobsError,
    RetryAfter,
    Snooze,
    TransactionLeftOpen,
    UniqueKeyConflict,
    UniqueKeyHeld,
    UnknownConnector,
    UnknownQueue,
    UnknownTask,
    UnrunnableJob,
    WorkerLost,
    _Later,
)

#: One instance of each exception class, made as the package makes it.
EXAMPLES: dict[str, Callable[[], BaseException]] = {
    "api.tokens.TokenRefused": lambda: _from("api.tokens", "TokenRefused")("unknown token"),
    "api.validation.Invalid": lambda: _from("api.validation", "Invalid")(
        {"priority": "must be an integer"}
    ),
    "connectors.command.CommandFailed": lambda: CommandFailed(
        "exited 2", CommandResult(exit_code=2, stdout="", stderr="no", pid=7, seconds=0.5)
    ),
    "connectors.command.CommandTimeout": lambda: CommandTimeout("ran over 5s"),
    "connectors.errors.ConnectorBusy": lambda: ConnectorBusy("hook", 2.5),
    "connectors.errors.ConnectorError": lambda: ConnectorError("failed"),
    "connectors.errors.ConnectorMisconfigured": lambda: ConnectorMisconfigured(
        "hook", {"config.url": "is required"}
    ),
    "connectors.errors.ConnectorRefused": lambda: ConnectorRefused("not allowed"),
    "connectors.errors.ConnectorThrottled": lambda: ConnectorThrottled("hook", 30.0, 429),
    "connectors.errors.UnknownConnectorKind": lambda: UnknownConnectorKind("ftp", ["http"]),
    "connectors.http.HttpStatusError": lambda: HttpStatusError(
        "answered 500", HttpResponse(500, {"X-Id": "1"}, b"oops")
    ),
    "connectors.smtp.SmtpPartlySent": lambda: SmtpPartlySent(
        ConnectorError("timed out"), 2, 5, in_job=True
    ),
    "cron.InvalidCron": lambda: _from("cron", "InvalidCron")("bad field '61'"),
    "cron.UnknownTimezone": lambda: _from("cron", "UnknownTimezone")("Mars/Olympus"),
    "dependencies.UnknownDependency": lambda: _from("dependencies", "UnknownDependency")([3, 1]),
    "exceptions.ArgumentMismatch": lambda: ArgumentMismatch(9, "parameters", "no x", True),
    "exceptions.DiscardJob": lambda: DiscardJob("not worth it"),
    "exceptions.InvalidArguments": lambda: InvalidArguments("bad", "kwargs['when']"),
    "exceptions.InvalidOption": lambda: InvalidOption("priority", "must be an integer"),
    "exceptions.InvalidQueueName": lambda: InvalidQueueName("a b"),
    "exceptions.JobCancelled": lambda: JobCancelled("job 3 was cancelled"),
    "exceptions.JobGone": lambda: JobGone(3, "cancelled"),
    "exceptions.JobTimeout": lambda: JobTimeout.exceeded(5.0),
    "exceptions.PayloadError": lambda: PayloadError("a NUL", "args"),
    "exceptions.PgJobsError": lambda: PgJobsError("failed"),
    "exceptions.RetryAfter": lambda: RetryAfter(until=datetime(2030, 1, 1, tzinfo=UTC)),
    "exceptions.Snooze": lambda: Snooze(60, reason="locked by accounting"),
    "exceptions.TransactionLeftOpen": lambda: TransactionLeftOpen({"default": "a BEGIN"}),
    "exceptions.UniqueKeyConflict": lambda: UniqueKeyConflict("default", "k", "repeatable read"),
    "exceptions.UniqueKeyHeld": lambda: UniqueKeyHeld(3, "reports", "k", 4),
    "exceptions.UnknownConnector": lambda: UnknownConnector("hook"),
    "exceptions.UnknownQueue": lambda: UnknownQueue("nowhere"),
    "exceptions.UnknownTask": lambda: UnknownTask.in_worker("shop.tasks.gone", retried=True),
    "exceptions.UnrunnableJob": lambda: UnrunnableJob(4, "args is not an array"),
    "exceptions.WorkerLost": lambda: WorkerLost("stopped heartbeating"),
    "exceptions._Later": lambda: _Later(5, None, "later"),
    "execution._GivenUp": lambda: _from("execution", "_GivenUp")("timed out"),
    "management.commands.pgjobs.LeftAlone": lambda: _from(
        "management.commands.pgjobs", "LeftAlone"
    )("is completed: left alone; --include-completed runs it again"),
    "notifier.SilentConnection": lambda: _from("notifier", "SilentConnection")("no answer"),
    "postgres.PostgreSQLRequired": lambda: _from("postgres", "PostgreSQLRequired")("sqlite3"),
    "schedules.InvalidSchedule": lambda: _from("schedules", "InvalidSchedule")("bad cron", 3),
    "schedules.NotRun": lambda: _from("schedules", "NotRun")("paused"),
    "secrets.SecretKeysInvalid": lambda: _from("secrets", "SecretKeysInvalid")("no keys"),
    "secrets.SecretsUnreadable": lambda: _from("secrets", "SecretsUnreadable")("wrong key"),
    "selection.InvalidSelection": lambda: _from("selection", "InvalidSelection")("bad"),
    "states.InvalidTransition": lambda: _from("states", "InvalidTransition")(
        3, "completed", "executing"
    ),
    "typed.Refused": lambda: _from("typed", "Refused")("not a date", "args[0]"),
    "typed.UnsupportedType": lambda: _from("typed", "UnsupportedType")("set[int]"),
}


def _from(module: str, name: str) -> type[BaseException]:
    return getattr(importlib.import_module(f"django_pgjobs.{module}"), name)


def defined_exceptions() -> set[str]:
    """Every exception class a module of the package defines, as ``module.Class``."""
    found = set()
    for info in pkgutil.walk_packages(django_pgjobs.__path__, "django_pgjobs."):
        if ".migrations" in info.name:
            continue
        for value in vars(importlib.import_module(info.name)).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found.add(f"{info.name.removeprefix('django_pgjobs.')}.{value.__qualname__}")
    return found


def test_every_exception_class_of_the_package_has_an_example_here():
    # A new exception class must be added to EXAMPLES, so that its pickling is tested.
    assert defined_exceptions() == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_exception_survives_a_pickle_round_trip(name):
    error = EXAMPLES[name]()
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error) and back.args == error.args
    assert vars(back) == vars(error)
