"""What every pgjobs admin shares: operator views that are POST + CSRF + permission.

Django's admin hides an action the user may not run and treats a POST of it
as "no action selected". An operator console should say no plainly instead:
a state-changing request without the permission gets 403 and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse

View = Callable[..., HttpResponse]


class OperatorAdmin(admin.ModelAdmin):
    """A ModelAdmin whose state-changing views and actions refuse with 403."""

    def operator_view(self, view: View, permission: str) -> View:
        """Wrap ``view``: staff login and CSRF (admin_view), POST only, ``permission`` required.

        ``permission`` names a ModelAdmin check: "change" calls has_change_permission.
        """

        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            if not getattr(self, f"has_{permission}_permission")(request):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(checked)

    def reader_view(self, view: View) -> View:
        """Wrap a read-only view: staff login, and the model's view permission."""

        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not self.has_view_or_change_permission(request):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(checked)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST" and "action" in request.POST:
            self.check_action_permission(request)
        return super().changelist_view(request, extra_context)

    def check_action_permission(self, request: HttpRequest) -> None:
        """403 for a posted action that exists but that this user may not run."""
        for name in request.POST.getlist("action"):
            found = self.get_action(name) if name else None
            if found is None:
                continue
            func = found.func if hasattr(found, "func") else found[0]  # Django 6.1 / 5.2
            needed = getattr(func, "allowed_permissions", ())
            if not all(getattr(self, f"has_{perm}_permission")(request) for perm in needed):
                raise PermissionDenied

    def operator_context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        """The admin's base context plus ``extra``, for our own pages."""
        return {**self.admin_site.each_context(request), "opts": self.opts, **extra}

    def render_page(self, request: HttpRequest, template: str, **context: Any) -> TemplateResponse:
        return TemplateResponse(request, template, self.operator_context(request, **context))
