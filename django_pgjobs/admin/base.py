"""What every pgjobs admin shares: operator views that are POST + CSRF + permission,
and pages that answer odd input with a message, never a 500.

Django's admin hides an action the user may not run and treats a POST of it
as "no action selected". An operator console should say no plainly instead:
a state-changing request without the permission gets 403 and changes nothing.

Django's admin also lets some input through to the database that PostgreSQL
refuses (a NUL character in a filter or an id, a regular expression it can't
compile) or that Python can't convert (a year of thirty digits, a year lookup of
year 0, a drill-down into year 9999 whose end is in year 10000): here such a filter
is an invalid lookup, such an id finds nothing, and JSON fields refuse what can't be
stored (``fields.py``). Django answers an invalid lookup with a redirect to the
unfiltered list (``?e=1``) and drops the reason: here the list says it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import (
    EmptyResultSet,
    FullResultSet,
    PermissionDenied,
    ValidationError,
)
from django.db import DataError, connections, models, transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, register_converter, reverse
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from .. import limits
from ..limits import plain_digits
from ..templatetags.pgjobs_admin import escaped
from .fields import StorableJSONField

View = Callable[..., HttpResponse]


#: Years a date hierarchy link may name (Python's datetime and PostgreSQL's both hold these).
YEARS = range(1, 10_000)


#: Lookups whose value PostgreSQL compiles as a regular expression.
REGEX_LOOKUPS = ("__regex", "__iregex")


class CheckedChangeList(ChangeList):
    """Django's changelist, but a filter that fails only once its SQL is written or
    run is an invalid lookup before any row is read."""

    def get_filters(self, request: HttpRequest) -> tuple[Any, ...]:
        try:
            found = super().get_filters(request)
        except (OverflowError, ValueError) as error:  # the drill-down's end, past 9999
            raise IncorrectLookupParameters(f"no such period: {error}") from None
        # What is left once the list's filters took theirs: lookups from the URL.
        self.url_lookups = found[2]
        using = self.root_queryset.db
        for key, values in self.url_lookups.items():
            if key.endswith("__range"):
                # Django hands the range lookup the URL's text, whose characters it
                # reads as the bounds: "1" was an IndexError (a 500), "12" 1 to 2.
                raise IncorrectLookupParameters(
                    f"{key}: a range can't be given in the URL; filter with __gte and __lte instead"
                )
            if key.endswith(REGEX_LOOKUPS):
                for value in values:
                    _check_regex(key, value, using)
        return found

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        if not self.url_lookups:
            return queryset  # only the list's own filters, whose SQL is known to compile
        # A year lookup of year 0 or of twenty digits is accepted by filter() and
        # raises only here, while Django writes the SQL.
        try:
            queryset.query.get_compiler(using=queryset.db).as_sql()
        except (EmptyResultSet, FullResultSet):
            pass
        except (OverflowError, ValueError) as error:
            raise IncorrectLookupParameters(error) from None
        return queryset


def _check_regex(key: str, value: Any, using: str) -> None:
    """PostgreSQL's complaint about ``value`` as a regular expression, as an invalid
    lookup (run, it would fail the page's query with a DataError)."""
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute("SELECT '' ~ %s", [str(value)])
    except DataError as error:
        raise IncorrectLookupParameters(f"{key}: {str(error).strip()}") from None


class OperatorAdmin(admin.ModelAdmin):
    """A ModelAdmin whose state-changing views and actions refuse with 403, and whose
    pages refuse odd input without a 500."""

    formfield_overrides = {models.JSONField: {"form_class": StorableJSONField}}

    def get_urls(self) -> list[URLPattern]:
        return [with_object_id(url) for url in super().get_urls()]

    def action_checkbox(self, obj: Any) -> str:
        """Django's checkbox, written out: its widget renders a template per row, which
        was two fifths of the time a page of 50 jobs took to render (and format_html
        per row was a tenth of what was left)."""
        label = _("Select this object for an action - {}").format(escaped(obj))
        return SafeString(
            f'<input type="checkbox" name="{ACTION_CHECKBOX_NAME}" value="{escaped(obj.pk)}" '
            f'class="action-select" aria-label="{label}">'
        )

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
            self._drop_impossible_selections(request)
        return super().changelist_view(request, extra_context)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CheckedChangeList

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """Django's, but a parameter the database or Python can't take is an invalid
        lookup instead of a 500, and the user is told what was wrong with it."""
        try:
            self._check_parameters(request)
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as error:
            # Django redirects to the unfiltered list (?e=1) and keeps no reason.
            reason = str(error).rstrip(".") or "no such page"
            self.message_user(request, f"Invalid filter or page: {reason}.", messages.ERROR,
                              fail_silently=True)  # fmt: skip
            raise

    def _check_parameters(self, request: HttpRequest) -> None:
        for name, values in request.GET.lists():
            if any("\x00" in value for value in values):
                raise IncorrectLookupParameters(f"{name}: NUL characters are not allowed")
        if self.date_hierarchy:
            year = request.GET.get(f"{self.date_hierarchy}__year")
            if year is not None and not (plain_digits(year) and int(year) in YEARS):
                raise IncorrectLookupParameters(f"no such year: {year[:20]!r}")
            for part in ("month", "day"):  # Django checks their range, not their size
                value = request.GET.get(f"{self.date_hierarchy}__{part}")
                if value is not None and not (plain_digits(value) and len(value) <= 2):
                    raise IncorrectLookupParameters(f"no such {part}: {value[:20]!r}")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """Django's search, but a term with a NUL finds nothing: no row holds one, and
        PostgreSQL refused it (a DataError, a 500). The list refuses it first
        (``_check_parameters``); Django's autocomplete view, which searches here for
        any relation to these rows, sends the term as it came."""
        if "\x00" in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        """The object, or None (the admin's "doesn't exist") for an id no row can have:
        one with a NUL, or for a numbered row text that is no id (``limits.id_in_text``):
        Django's to_python, int(), read " 1 " and "01" as row 1."""
        if from_field in (None, self.opts.pk.name) and not self._possible_pk(object_id):
            return None
        return super().get_object(request, object_id, from_field)

    def _drop_impossible_selections(self, request: HttpRequest) -> None:
        """Leave out selected ids that no row can have (Django would answer 500)."""
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        possible = [pk for pk in selected if self._possible_pk(pk)]
        if possible != selected:
            request.POST = request.POST.copy()
            request.POST.setlist(ACTION_CHECKBOX_NAME, possible)

    def _possible_pk(self, value: str) -> bool:
        if "\x00" in value:
            return False
        if isinstance(self.opts.pk, models.IntegerField):  # AutoField, BigAutoField
            return limits.id_in_text(value) is not None
        try:
            self.opts.pk.to_python(value)
        except ValidationError:
            return False
        return True

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


#: Object ids a URL can't carry as they are: a browser resolves "/./" and "/../"
#: before it asks, so a queue named "." or ".." linked to another page. Spelt as
#: Django's ``quote`` spells what it escapes; no id it quotes reads so, as it escapes
#: every "_" (as "_5F").
DOT_SEGMENTS = {".": "_2E", "..": "_2E_2E"}
_SPELT_DOTS = {spelt: name for name, spelt in DOT_SEGMENTS.items()}


class ObjectIdConverter:
    """The id in Django's object URLs (change, history, delete) and a queue's pause and
    resume URLs, a browser can follow whatever it is: ``reverse`` spells "." and ".." as
    DOT_SEGMENTS say, and the view gets them back, as Django's ``quote`` made them.
    Every link to an object goes through ``reverse`` with the id ``quote`` made, which
    leaves dots as they are: the message after a save and the index's "Recent actions"
    (``LogEntry.get_admin_url``) linked to "/./change/"."""

    regex = ".+"  # Django's <path:>: an id may hold "/"

    def to_python(self, value: str) -> str:
        return _SPELT_DOTS.get(value, value)

    def to_url(self, value: Any) -> str:
        text = str(value)
        return DOT_SEGMENTS.get(text, text)


register_converter(ObjectIdConverter, "pgjobs_object_id")


def with_object_id(url: Any) -> Any:
    """One of Django's admin URLs, its ``<path:object_id>`` an ObjectIdConverter's."""
    route = str(url.pattern)
    if not isinstance(url, URLPattern) or "<path:object_id>" not in route:
        return url
    spelt = route.replace("<path:object_id>", "<pgjobs_object_id:object_id>")
    return path(spelt, url.callback, url.default_args, url.name)


def url_or_none(name: str, *args: object) -> str | None:
    """The URL, or None for an argument no URL can carry (an empty queue name, written
    by SQL): the page shows the value without a link. A primary key of a change page
    goes through the admin's ``quote`` first, as Django's own links do."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def id_in_url(text: str, kind: str) -> int:
    """The row id an action's URL names (``limits.id_in_text``); else 404, as for a URL
    that names no page (``<int:>`` read "01" as 1)."""
    row_id = limits.id_in_text(text)
    if row_id is None:
        raise Http404(f"{limits.shown(text)} is not a {kind} id")
    return row_id
