"""Factories that build valid jobs and queues; one trait per job state."""

from __future__ import annotations

import uuid
from datetime import timedelta

import factory
from django.db import connection
from django.utils import timezone

from django_pgjobs.cron import timing
from django_pgjobs.models import Connector, Job, Queue, Schedule, WorkerProcess
from django_pgjobs.states import JobState


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"queue-{n}")


class WorkerProcessFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkerProcess

    host = "test-host"
    pid = factory.Sequence(lambda n: 10_000 + n)
    queues = factory.LazyFunction(lambda: ["default"])


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    task = "testproject.demo.tasks.add"
    queue = "default"
    args = factory.LazyFunction(lambda: [1, 2])
    kwargs = factory.LazyFunction(dict)
    state = JobState.AVAILABLE
    max_attempts = 3

    class Params:
        waiting = factory.Trait(state=JobState.WAITING)
        scheduled = factory.Trait(
            state=JobState.SCHEDULED,
            run_at=factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1)),
        )
        executing = factory.Trait(
            state=JobState.EXECUTING,
            attempt=1,
            attempted_at=factory.LazyFunction(timezone.now),
            lease=factory.LazyFunction(uuid.uuid4),
        )
        retryable = factory.Trait(
            state=JobState.RETRYABLE,
            attempt=1,
            attempted_at=factory.LazyFunction(timezone.now),
            run_at=factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=5)),
            errors=factory.LazyFunction(
                lambda: [{"attempt": 1, "at": "", "error": "E: x", "traceback": ""}]
            ),
        )
        completed = factory.Trait(
            state=JobState.COMPLETED,
            attempt=1,
            result=3,
            attempted_at=factory.LazyFunction(timezone.now),
            finished_at=factory.LazyFunction(timezone.now),
        )
        discarded = factory.Trait(
            state=JobState.DISCARDED,
            attempt=3,
            finished_at=factory.LazyFunction(timezone.now),
            errors=factory.LazyFunction(
                lambda: [
                    {"attempt": n, "at": "", "error": "E: x", "traceback": ""} for n in (1, 2, 3)
                ]
            ),
        )
        cancelled = factory.Trait(
            state=JobState.CANCELLED, finished_at=factory.LazyFunction(timezone.now)
        )


class ScheduleFactory(factory.django.DjangoModelFactory):
    """A valid, enabled schedule that fires every minute in UTC; nothing planned yet."""

    class Meta:
        model = Schedule

    name = factory.Sequence(lambda n: f"schedule-{n}")
    cron = "* * * * *"
    timezone = "UTC"
    task = "testproject.demo.tasks.record"
    args = factory.LazyAttribute(lambda schedule: [schedule.name])

    class Params:
        disabled = factory.Trait(enabled=False)
        skipping = factory.Trait(catch_up="none")
        # Planned by a scheduler: its next tick (after now) is known.
        planned = factory.Trait(
            next_fire_at=factory.LazyAttribute(
                lambda s: timing(s.cron, s.timezone).next_after(timezone.now())
            )
        )


class ConnectorFactory(factory.django.DjangoModelFactory):
    """A valid connector; ``ConnectorFactory(secrets={"token": "..."})`` stores them encrypted."""

    class Meta:
        model = Connector
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"connector-{n}")
    kind = "http"
    config = factory.LazyFunction(lambda: {"url": "http://127.0.0.1:9/hook"})

    @factory.post_generation
    def secrets(self, create: bool, extracted: dict | None, **kwargs: object) -> None:
        if extracted:
            self.set_secrets(extracted)
            if create:
                self.save()


def stored_as_before(connector: Connector, config: dict) -> Connector:
    """``connector`` given ``config`` past the rules for a config being written
    (``ConnectorKind.write_problems``: a key in a URL's query string): a row saved by an
    earlier release, which a worker still uses."""
    Connector.objects.filter(pk=connector.pk).update(config=config)
    connector.refresh_from_db()
    return connector


def connector_form(**overrides: object) -> dict[str, object]:
    """The admin's connector form, filled in for an ``http`` connector "hook"."""
    return {
        "name": "hook",
        "kind": "http",
        "description": "",
        "config": '{"url": "http://127.0.0.1:9/hook"}',
        "concurrency": "",
        "secrets": "",
        **overrides,
    }


def finished_jobs_analyzed(
    state: str = "'completed'", params: list | None = None, count: int = 30_000
) -> list[int]:
    """``count`` finished jobs of one task, written by one statement (a large table,
    fast), each in the state the SQL ``state`` says of its ``n`` (1 to ``count``;
    ``params`` fill its placeholders), the table analyzed after; their ids."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,
                                    max_attempts, run_at, created_at, finished_at, errors,
                                    meta, pending_dependencies)
            SELECT 'testproject.demo.tasks.add', 'default', '[]', '{{}}', {state}, 0, 1, 3,
                   now(), now(), now(), '[]', '{{}}', 0
            FROM generate_series(1, %s) AS n
            RETURNING id
            """,
            [*(params or []), count],
        )
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("ANALYZE pgjobs_job")
    return ids
