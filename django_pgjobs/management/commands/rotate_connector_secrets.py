"""``manage.py rotate_connector_secrets``: re-encrypt every connector's secrets with the
first key of PGJOBS["SECRET_KEYS"], so older keys can be dropped afterwards."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from django_pgjobs import conf, secrets, unmigrated
from django_pgjobs.models import Connector


class Command(BaseCommand):
    help = (
        "Re-encrypt connector secrets with the first key of PGJOBS['SECRET_KEYS']. Run it "
        "after putting a new key first; then the old keys can be removed."
    )

    def execute(self, *args: Any, **options: Any) -> Any:
        with unmigrated.required(conf.get("DATABASE")):  # "run migrate", not a traceback
            return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        using = conf.get("DATABASE")
        rotated = 0
        with transaction.atomic(using=using):
            stored = Connector.objects.using(using).select_for_update()
            for connector in stored.exclude(encrypted_secrets=""):
                try:
                    connector.encrypted_secrets = secrets.rotate(connector.encrypted_secrets)
                except secrets.SecretsUnreadable as error:
                    raise CommandError(f"connector {connector.name!r}: {error}") from None
                connector.save(update_fields=["encrypted_secrets", "updated_at"])
                rotated += 1
        self.stdout.write(f"re-encrypted the secrets of {rotated} connector(s)")
