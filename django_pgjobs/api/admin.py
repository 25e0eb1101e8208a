"""Admin for API tokens: issued on save and shown once, revocable, scoped to queues.

Registered from ``PgJobsConfig.ready()`` (the admin engineer owns
``django_pgjobs/admin.py``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..admin.base import OperatorAdmin
from ..models import ApiToken
from ..queues import QUEUE_NAME
from .tokens import generate


class ApiTokenForm(forms.ModelForm):
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
        queues = self.cleaned_data.get("queues") or []
        if not isinstance(queues, list) or not all(
            isinstance(name, str) and (name == "*" or QUEUE_NAME.match(name)) for name in queues
        ):
            raise forms.ValidationError('a list of queue names, e.g. ["mail"], or ["*"]')
        return queues

    def clean_connectors(self) -> list[str]:
        names = self.cleaned_data.get("connectors") or []
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise forms.ValidationError('a list of connector names, e.g. ["mailer"], or ["*"]')
        return names


@admin.register(ApiToken)
class ApiTokenAdmin(OperatorAdmin):
    form = ApiTokenForm
    list_display = [
        "name",
        "prefix",
        "queues",
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

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            plain, obj.token_hash, obj.prefix = generate()
            request._pgjobs_issued_token = plain  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

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
