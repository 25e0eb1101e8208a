"""django-pgjobs: PostgreSQL-native background jobs and cron schedules for Django."""

#: The release, by semantic versioning (CHANGELOG.md): read by pyproject.toml too.
__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .exceptions import (
    DiscardJob,
    InvalidOption,
    PayloadError,
    RetryAfter,
    Snooze,
    UnknownConnector,
    UnknownQueue,
    UnknownTask,
)
from .tasks import Task, task

if TYPE_CHECKING:
    from .models import Job

__all__ = [
    "DiscardJob",
    "InvalidOption",
    "Job",
    "PayloadError",
    "RetryAfter",
    "Snooze",
    "Task",
    "UnknownConnector",
    "UnknownQueue",
    "UnknownTask",
    "task",
]


def __getattr__(name: str) -> Any:
    # Models can only be imported once Django's app registry is ready, so
    # ``from django_pgjobs import Job`` is resolved lazily.
    if name == "Job":
        from .models import Job

        return Job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
