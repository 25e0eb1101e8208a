"""Admin for connectors: secrets are write-only, and connections can be tested.

Registered from ``PgJobsConfig.ready()`` (the admin engineer owns
``django_pgjobs/admin.py``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from .. import ratelimits
from ..admin.large import LargeValuesAdmin, not_shown_field
from ..models import Connector, unread_fields
from ..payload import names_in
from ..redaction import REDACTED, mask_credentials
from ..secrets import SecretKeysInvalid, SecretsUnreadable
from ..templatetags.pgjobs_admin import when
from .base import ConnectorKind, Option
from .registry import kinds
from .shown_config import mask_left, restored, shown_config, shown_text
from .store import build, load


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value, not even the one just submitted (like a password field)."""

    def format_value(self, value: Any) -> None:
        return None


def parse_secret_lines(text: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=value`` lines set secrets, ``NAME=`` lines remove them."""
    changes: dict[str, str] = {}
    removals: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name:
            raise forms.ValidationError(f"line {number}: expected NAME=value (or NAME= to remove)")
        if value:
            changes[name] = value
        else:
            removals.append(name)
    return changes, removals


def options_summary(kind_class: type[ConnectorKind]) -> str:
    """``url (required), method=POST, ...`` for the config field's help."""
    parts = [_option_summary(option, kind_class) for option in kind_class.options]
    secrets = "any name" if kind_class.secrets is None else ", ".join(kind_class.secrets)
    return ", ".join(parts) + f" — secrets: {secrets or 'none'}"


def _option_summary(option: Option, kind_class: type[ConnectorKind]) -> str:
    if not option.required:
        return f"{option.name}={option.default!r}"
    if option.name in kind_class.secret_options:
        return f"{option.name} (required, or the {option.name} secret)"
    return f"{option.name} (required)"


class ConnectorForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=())
    secrets = forms.CharField(
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
    )
    clear_secrets = forms.BooleanField(required=False, help_text="Remove every stored secret.")

    class Meta:
        model = Connector
        fields = [
            "name",
            "kind",
            "description",
            "config",
            "concurrency",
            "rate_limit",
            "rate_period",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [
            (name, kind_class.label or name) for name, kind_class in sorted(kinds().items())
        ]
        shown = [self.instance.kind] if self.instance.kind in kinds() else sorted(kinds())
        if "config" in self.fields:  # not for staff who may only view
            self.fields["config"].help_text = "A JSON object. " + "; ".join(
                f"{name}: {options_summary(kinds()[name])}" for name in shown
            )
        if self.shows_stored_config():
            # A row written by SQL may hold credentials the rules refuse: never rendered.
            self.initial["config"] = shown_config(self.instance.config)
        stored = ", ".join(names_in(self.instance.secret_names)) or "none"
        self.fields["secrets"].help_text = (
            f"Stored: {stored}. One NAME=value per line sets a secret, NAME= removes one; "
            "leave empty to keep them. Stored values are never shown."
        )

    def shows_stored_config(self) -> bool:
        """Whether the config field is filled from a stored row's config (read whole)."""
        instance = self.instance
        return (
            "config" in self.fields
            and not instance._state.adding
            and "config" not in unread_fields(instance)
        )

    def clean_config(self) -> Any:
        """The config posted, a masked value left as shown put back as stored
        (``shown_config.restored``): the mask is never saved in its place."""
        config = self.cleaned_data.get("config")
        if not self.shows_stored_config():
            return config
        config = restored(config, self.instance.config)
        if mask_left(config, self.instance.config):
            raise forms.ValidationError(
                f"holds {REDACTED}, a credential's mask, in a value edited around it: type "
                "the value again, or leave the value as shown to keep it"
            )
        return config

    def clean_secrets(self) -> tuple[dict[str, str], list[str]]:
        return parse_secret_lines(self.cleaned_data.get("secrets") or "")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        changes, removals = cleaned.get("secrets") or ({}, [])
        kept = "encrypted_secrets" in unread_fields(self.instance)
        if kept and (changes or removals) and not cleaned.get("clear_secrets"):
            self.add_error("secrets", "The stored secrets were not read (too large): "
                           "tick 'clear secrets' to start over.")  # fmt: skip
            return cleaned
        if "kind" in cleaned:  # the kind judges the secrets' values (set_secrets)
            self.instance.kind = cleaned["kind"]
        try:
            if cleaned.get("clear_secrets"):
                self.instance.set_secrets(changes)
            elif changes or removals:
                self.instance.update_secrets(changes, removals)
        except SecretKeysInvalid as error:
            self.add_error("secrets", str(error))
        except SecretsUnreadable as error:
            self.add_error("secrets", f"{error} Tick 'clear secrets' to start over.")
        except ValidationError as refused:  # a value the kind can't use: never shown
            self.add_error(None, refused)
        return cleaned


@admin.register(Connector)
class ConnectorAdmin(LargeValuesAdmin):
    form = ConnectorForm
    large_fields = ("description", "config", "encrypted_secrets", "secret_names")
    listed_fields = ("secret_names",)
    description_not_shown = not_shown_field("description")
    config_not_shown = not_shown_field("config")
    list_display = [
        "name", "kind", "concurrency", "rate", "throttled", "stored_secrets", "updated_at"
    ]  # fmt: skip
    list_filter = ["kind"]
    search_fields = ["name", "description"]
    readonly_fields = ["throttled", "created_at", "updated_at"]
    actions = ["test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "description", "concurrency"]}),
        (
            "Rate limit",
            {
                "fields": ["rate_limit", "rate_period"],
                "description": "At most rate_limit jobs using the connector start in any "
                "window of rate_period seconds, across all workers; a job over it waits "
                "until the window has room, its attempt not counted.",
            },
        ),
        (
            "Backpressure",
            {
                "fields": ["throttled"],
                "description": "When the service answers 429 or 503 with Retry-After, every "
                "job using the connector waits until then, its attempt not counted.",
            },
        ),
        ("Configuration", {"fields": ["config"]}),
        ("Secrets (encrypted, write-only)", {"fields": ["secrets", "clear_secrets"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @method_decorator(sensitive_post_parameters("secrets"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # A request that fails (a lock timeout, a dropped connection) is reported with
        # its POST: Django's debug page and the error mail to ADMINS mask this field.
        return super().changeform_view(request, *args, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Connector | None = None) -> list[Any]:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # Staff who may only view see which secrets are stored, and nothing to type in.
            # And the config with what credentials a row written by SQL holds masked.
            return [
                ("Secrets", {"fields": ["stored_secrets"]}) if "secrets" in options["fields"]
                else (title, {**options, "fields": [
                    "config_shown" if field == "config" else field for field in options["fields"]
                ]})
                for title, options in fieldsets
            ]  # fmt: skip
        return fieldsets

    @admin.display(description="config")
    def config_shown(self, connector: Connector) -> str:
        return shown_text(connector.config)

    @admin.display(description="rate limit")
    def rate(self, connector: Connector) -> str:
        return ratelimits.describe(connector.rate_limit, connector.rate_period) or "—"

    @admin.display(description="throttled")
    def throttled(self, connector: Connector) -> str:
        until = connector.throttled_until
        if until is None or until <= timezone.now():
            return "—"
        return format_html("until {}", when(until))

    @admin.display(description="secrets")
    def stored_secrets(self, connector: Connector) -> str:
        # The page's row was read within shown.limit(), the list's within LISTED_BYTES.
        unread = self.listed(connector)
        if "secret_names" in unread:
            return f"names {unread['secret_names']}"
        return ", ".join(names_in(connector.secret_names)) or "—"

    @admin.action(description="Test connection of selected connectors", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Connector]) -> None:
        for name in queryset.values_list("name", flat=True):
            built: ConnectorKind | None = None
            try:  # read as a job reads it: a value too large is a misconfiguration
                built = build(load(name, queryset.db))
                seen, level = built.test(), messages.SUCCESS
            except Exception as problem:  # shown to the operator, never raised
                seen, level = f"{type(problem).__name__}: {problem}", messages.ERROR
            # What a server answered may echo the secrets: messages are stored in the session.
            shown = built.redact(seen) if built is not None else mask_credentials(seen)
            # Prefixed: the admin capitalises a message's first letter, and so a name.
            self.message_user(request, f"Connector {name}: {shown}", level)
