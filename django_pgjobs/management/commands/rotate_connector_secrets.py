"""``manage.py rotate_connector_secrets``: re-encrypt every connector's secrets with the
first key of PGJOBS["SECRET_KEYS"], so older keys can be dropped afterwards."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from django_pgjobs import conf, secrets, shown, unmigrated
from django_pgjobs.models import Connector

#: The one column rotation reads of a connector besides its name.
SECRETS = ("encrypted_secrets",)


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
        try:  # keys no connector could be rotated with: said once, not per connector
            secrets.configured_keys()
        except secrets.SecretKeysInvalid as error:
            raise CommandError(str(error)) from None
        rotated, refused = 0, []
        with transaction.atomic(using=using):
            stored = Connector.objects.using(using).select_for_update().only("pk", "name")
            for connector in shown.within(stored.exclude(encrypted_secrets=""), SECRETS):
                why = self.too_large(connector) or self.rotate(connector, using)
                if why:
                    refused.append(why)
                else:
                    rotated += 1
        self.stdout.write(f"re-encrypted the secrets of {rotated} connector(s)")
        if refused:
            raise CommandError(
                "not re-encrypted, so the key that encrypted them is still needed: "
                + "; ".join(refused)
            )

    @staticmethod
    def too_large(connector: Connector) -> str | None:
        """Why a connector's secrets were not read (too large: a row written by SQL may
        hold 255 MB there, no connector can use them), or None if they were."""
        if too_large := shown.unpack(connector, SECRETS, verb="read"):
            return (
                f"connector {connector.name!r}: encrypted_secrets {too_large['encrypted_secrets']}"
                " (enter its secrets again, or delete it)"
            )
        return None

    @staticmethod
    def rotate(connector: Connector, using: str) -> str | None:
        """Write the connector's secrets re-encrypted, and nothing else (``save()`` would
        check, and so load, its other columns, which may be as large); or, writing
        nothing, say why they can't be: one connector whose secrets no key decrypts
        stopped the rotation of every other. What is said never holds a secret, nor
        the stored token or anything read from it."""
        try:
            token = secrets.rotate(connector.encrypted_secrets)
        except secrets.SecretsUnreadable:
            advice = secrets.unreadable_advice(connector.encrypted_secrets)
            if advice == secrets.KEY_REMOVED:  # said in the line's own words
                advice = (
                    "was the key that encrypted them removed? put it back, or enter its "
                    "secrets again"
                )
            else:  # a sentence of its own, said inside this line's parentheses
                advice = advice[0].lower() + advice[1:].rstrip(".")
            why = f"its secrets can't be decrypted with any key in PGJOBS['SECRET_KEYS'] ({advice})"
        except Exception as error:  # its message might quote the token: not shown
            why = f"its secrets could not be re-encrypted ({type(error).__name__})"
        else:
            Connector.objects.using(using).filter(pk=connector.pk).update(
                encrypted_secrets=token, updated_at=timezone.now()
            )
            return None
        return f"connector {connector.name!r}: {why}"
