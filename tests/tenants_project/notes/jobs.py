"""Tasks of the django-tenants test project."""

from django.db import connection
from django_tenants.utils import get_tenant_model, schema_context

from django_pgjobs import task
from tests.tenants_project.notes.models import Note


@task
def write_note(text: str) -> str:
    Note.objects.create(text=text, schema=connection.schema_name)
    return connection.schema_name


@task
def note_every_tenant(text: str) -> int:
    """What a cron job for every tenant does: one job per tenant, enqueued inside it."""
    tenants = get_tenant_model().objects.exclude(schema_name="public")
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            write_note.enqueue(text)
    return len(tenants)
