"""Django ``@task`` functions the backend tests enqueue; workers import them by path."""

from __future__ import annotations

import asyncio

from django.core.mail import send_mail

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task


# Django's own example, as its documentation (topics/tasks) writes it.
@task
def email_users(emails, subject, message):
    return send_mail(subject=subject, message=message, from_email=None, recipient_list=emails)


@task(priority=2, queue_name="mail")
def add(a: int, b: int) -> int:
    return a + b


@task
async def async_double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


@task(takes_context=True)
def which_attempt(context) -> dict:
    return {"attempt": context.attempt, "id": context.task_result.id}


class GatewayDown(Exception):
    pass


@task(max_attempts=2, timeout=30)
def flaky_charge(order_id: int) -> None:
    raise GatewayDown(f"could not charge order {order_id}")


@task(unique_key="nightly-report")
def nightly_report() -> str:
    return "done"


@task
def count_items(items: list) -> int:
    return len(items)
