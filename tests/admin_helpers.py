"""Users and clients for admin tests: a superuser, and staff with exactly the given permissions."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_pgjobs.models import Job


def staff_client(*codenames: str, username: str = "operator") -> Client:
    """A logged-in staff user holding only the named pgjobs permissions ("view_job", ...)."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="pgjobs", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def changelist(model: str = "job") -> str:
    return reverse(f"admin:pgjobs_{model}_changelist")


def detail(job: Job) -> str:
    return reverse("admin:pgjobs_job_change", args=[job.pk])


def action(name: str, *objects: object, select_across: bool = False) -> dict[str, object]:
    """POST data of a changelist action on ``objects`` (all matching rows with select_across)."""
    return {
        "action": name,
        "index": 0,
        "select_across": "1" if select_across else "0",
        "_selected_action": [obj.pk for obj in objects],
    }


def state_of(job: Job) -> str:
    return Job.objects.values_list("state", flat=True).get(pk=job.pk)


def messages_of(response) -> list[str]:
    """The messages a response's page shows, as text."""
    return [str(message) for message in response.context["messages"]]
