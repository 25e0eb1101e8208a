"""Enqueue a handful of demo jobs: some succeed, some retry, one is scheduled."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from testproject.demo.tasks import add, always_fails, async_sleep, flaky, send_welcome


class Command(BaseCommand):
    help = "Enqueue demo jobs for the worker to run."

    def handle(self, *args, **options):
        with transaction.atomic():
            jobs = [add.enqueue(n, n) for n in range(5)]
            jobs += [send_welcome.enqueue(user_id) for user_id in (1, 2, 3)]
            jobs += [flaky.enqueue(0.7) for _ in range(3)]
            jobs.append(async_sleep.enqueue(1.5))
            jobs.append(always_fails.enqueue("this one ends discarded"))
            jobs.append(add.using(run_at=timezone.now() + timedelta(minutes=1)).enqueue(40, 2))
        self.stdout.write(f"enqueued {len(jobs)} demo jobs: " + ", ".join(f"#{j.pk}" for j in jobs))
