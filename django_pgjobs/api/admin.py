"""Admin for API tokens: issued on save and shown once, revocable, scoped to queues.

Registered from ``PgJobsConfig.ready()`` (the admin engineer owns
``django_pgjobs/admin.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..admin.fields import StorableJSONField
from ..admin.large import LargeValuesAdmin, not_shown_field
from ..connectors.store import CONNECTOR_NAME
from ..exceptions import InvalidOption
from ..models import ApiToken
from ..queues import QUEUE_NAME
from .tokens import generate, scope, unknown_names_said


class NamesField(StorableJSONField):
    """A JSON list of names, or the names separated by commas as ``issue_api_token
    --queues mail,default`` takes them: ``mail, default`` was refused with "Enter a
    valid JSON." alone."""

    default_error_messages = {
        "invalid": "Enter names separated by commas (mail, default), or a JSON list of "
        'them (["mail", "default"]); * for all.',
    }

    def to_python(self, value: Any) -> Any:
        text = value.strip() if isinstance(value, str) else None
        if text and text[0] not in '[{"' and not _is_json(text):
            return [name.strip() for name in text.split(",") if name.strip()]
        return super().to_python(value)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class ApiTokenForm(forms.ModelForm):
    queues = NamesField(
        required=False,
        initial=list,  # the model's default, which a declared field doesn't get
        help_text="Queues it may enqueue into, read and run: mail, default (or a JSON "
        "list); * for every queue.",
    )
    connectors = NamesField(
        required=False,
        initial=list,
        help_text="Connectors its jobs may name explicitly: mailer, hook (or a JSON "
        "list); * for every connector.",
    )

    class Meta:
        model = ApiToken
        fields = [
            "name",
            "queues",
            "connectors",
            "can_enqueue",
            "can_read",
            "can_run",
            "active",
            "expires_at",
        ]

    def clean_queues(self) -> list[str]:
        return self._names("queues", QUEUE_NAME, 'a list of queue names, e.g. ["mail"], or ["*"]')

    def clean_connectors(self) -> list[str]:
        return self._names(
            "connectors", CONNECTOR_NAME, 'a list of connector names, e.g. ["mailer"], or ["*"]'
        )

    def _names(self, field: str, pattern: re.Pattern[str], expected: str) -> list[str]:
        """The field's names as tokens.issue() checks them (a connector of spaces or
        of 101 characters was stored, a name no connector can have)."""
        names = self.cleaned_data.get(field) or []
        if not isinstance(names, list):  # scope() would take a JSON object's keys
            raise forms.ValidationError(expected)
        try:
            return scope(names, field, pattern)
        except InvalidOption as refused:
            raise forms.ValidationError(f"{refused.problem}: {expected}") from None


@admin.register(ApiToken)
class ApiTokenAdmin(LargeValuesAdmin):
    form = ApiTokenForm
    # Any row may have been written by SQL: 2 million queue names made the list 43 MB.
    large_fields = ("queues", "connectors")
    listed_fields = ("queues",)
    queues_not_shown = not_shown_field("queues")
    connectors_not_shown = not_shown_field("connectors")
    list_display = [
        "name",
        "prefix",
        "queue_names",
        "can_enqueue",
        "can_read",
        "can_run",
        "active",
        "expires_at",
        "last_used_at",
    ]
    list_filter = ["active", "can_run"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    actions = ["revoke"]

    @admin.display(description="queues")
    def queue_names(self, token: ApiToken) -> str:
        # The page's row was read within shown.limit(), the list's within LISTED_BYTES.
        too_large = self.listed(token)
        if "queues" in too_large:
            return too_large["queues"]
        return json.dumps(token.queues, ensure_ascii=False)  # as Django shows a JSONField

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            plain, obj.token_hash, obj.prefix = generate()
            request._pgjobs_issued_token = plain  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)
        # As issue_api_token warns: a misspelt queue made a token every request for the
        # queue meant was refused with. Saved all the same (one may be created later).
        # Only the fields the form changed: a scope too large to show is not in it.
        edited = {
            f: form.cleaned_data[f] for f in ("queues", "connectors") if f in form.changed_data
        }
        for said in unknown_names_said(edited.get("queues", ()), edited.get("connectors", ())):
            self.message_user(request, said, messages.WARNING)

    def response_add(self, request: HttpRequest, obj: ApiToken, *args: Any) -> HttpResponse:
        # Shown in this response only: never stored, never put in a message or a cookie.
        context = {
            **self.admin_site.each_context(request),
            "token": obj,
            "plain": request._pgjobs_issued_token,  # type: ignore[attr-defined]
            "opts": self.opts,
        }
        response = TemplateResponse(request, "admin/pgjobs/apitoken/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.update(active=False)
        self.message_user(request, f"revoked {count} token(s)", messages.SUCCESS)
