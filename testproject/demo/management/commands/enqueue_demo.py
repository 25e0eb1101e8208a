"""Enqueue demo jobs spread over the first minute: some succeed, some retry, one fails."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from testproject.demo.tasks import add, always_fails, async_sleep, flaky, send_welcome

#: Seconds between one demo job's start and the next: a newcomer who opens the admin
#: after the demo starts still sees jobs become due, run, retry and fail.
SPACING = 5


class Command(BaseCommand):
    help = "Enqueue demo jobs for the worker to run, one every few seconds over a minute."

    def handle(self, *args, **options):
        calls = [
            *[(add, (n, n)) for n in range(4)],
            *[(send_welcome, (user_id,)) for user_id in (1, 2, 3)],
            *[(flaky, (0.7,)) for _ in range(3)],
            (async_sleep, (1.5,)),
            (always_fails, ("this one ends discarded",)),
            (add, (40, 2)),
        ]
        now = timezone.now()
        with transaction.atomic():
            jobs = [
                task.using(run_at=now + timedelta(seconds=n * SPACING)).enqueue(*args)
                for n, (task, args) in enumerate(calls)
            ]
        self.stdout.write(
            f"enqueued {len(jobs)} demo jobs, one every {SPACING}s over the next minute: "
            + ", ".join(f"#{j.pk}" for j in jobs)
        )
