"""Template tags of the pgjobs admin pages."""

from __future__ import annotations

import calendar
import datetime
import html
import unicodedata
from typing import Any

import django
from django import template
from django.contrib.admin.views.main import ChangeList
from django.utils import formats, timezone
from django.utils.safestring import SafeString
from django.utils.text import capfirst

from ..limits import plain_digits

register = template.Library()


@register.inclusion_tag("admin/change_list_results.html")
def pgjobs_result_list(cl: ChangeList) -> dict[str, Any]:
    """Django's ``{% result_list cl %}``, its rows written faster (``admin/rows.py``)."""
    from ..admin.rows import result_list  # the admin package imports this module

    return result_list(cl)


@register.inclusion_tag("admin/date_hierarchy.html")
def pgjobs_date_hierarchy(cl: ChangeList) -> dict[str, Any]:
    """Django's date drill-down without its ``SELECT DISTINCT date_trunc(...)`` scans.

    Django lists only the years/months/days that have rows, which reads every
    row. Here the range comes from the first and last job by id (two index
    lookups; jobs are created in id order) and every period inside it is
    offered, including empty ones.
    """
    field = cl.date_hierarchy
    first, last = _bounds(cl, field)
    params = {key: cl.params.get(f"{field}__{key}") for key in ("year", "month", "day")}
    year, month, day = (int(v) if v and plain_digits(str(v)) else None for v in params.values())

    def link(**lookups: int) -> str:
        return cl.get_query_string(
            {f"{field}__{key}": value for key, value in lookups.items()}, [f"{field}__"]
        )

    name = cl.model._meta.get_field(field).verbose_name
    if first is None or last is None:
        return {"show": False}
    if not (year or month or day) and first.year == last.year:
        year = first.year
    if year and month and day:
        date = datetime.date(year, month, day)
        return {
            "show": True,
            "back": {"link": link(year=year, month=month), "title": _month_title(date)},
            "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
            "field_name": name,
        }
    if year and month:
        days = range(1, calendar.monthrange(year, month)[1] + 1)
        dates = [datetime.date(year, month, d) for d in days]
        return {
            "show": True,
            "back": {"link": link(year=year), "title": str(year)},
            "choices": [
                {
                    "link": link(year=year, month=month, day=d.day),
                    "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                }
                for d in dates
                if first.date() <= d <= last.date()
            ],
            "field_name": name,
        }
    if year:
        months = [datetime.date(year, m, 1) for m in range(1, 13)]
        return {
            "show": True,
            "back": {"link": link(), "title": "All dates"},
            "choices": [
                {"link": link(year=year, month=m.month), "title": _month_title(m)}
                for m in months
                if (first.year, first.month) <= (year, m.month) <= (last.year, last.month)
            ],
            "field_name": name,
        }
    years = range(max(first.year, last.year - YEARS_SHOWN + 1), last.year + 1)
    return {
        "show": True,
        "back": None,
        "choices": [{"link": link(year=y), "title": str(y)} for y in years],
        "field_name": name,
    }


#: Years the drill-down offers at most, back from the newest job's.
YEARS_SHOWN = 100


def _bounds(
    cl: ChangeList, field: str
) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """The first and the last job's times, the last no later than now: a job written by
    SQL as created in year 9999 (or in year 1, with YEARS_SHOWN) made every list page
    offer 8,000 years (450 KB, 0.36 s a page instead of 0.05)."""
    rows = cl.root_queryset.values_list(field, flat=True)
    first, last = rows.order_by("pk").first(), rows.order_by("-pk").first()
    if first is None or last is None:
        return None, None
    now = timezone.localtime()
    first, last = sorted((min(timezone.localtime(first), now), min(timezone.localtime(last), now)))
    return first, last


def _month_title(date: datetime.date) -> str:
    return capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT"))


@register.filter
def pretty_json(value: Any) -> str:
    """JSON indented for reading, or compact where indented it would be over
    ``shown.limit()`` characters: each line is indented by its depth, so 1 MB of
    numbers 100 levels down took 66 MB indented. The template escapes it."""
    import json

    from ..limits import shown
    from ..shown import limit

    most, written, pieces = limit(), 0, []
    indented = json.JSONEncoder(indent=2, ensure_ascii=False, default=str)
    try:
        for piece in indented.iterencode(value):  # stops early: never the whole text
            written += len(piece)
            if written > most:
                return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
            pieces.append(piece)
    except (ValueError, RecursionError):  # nested too deep to indent, written by SQL
        return shown(value, 100_000)
    return "".join(pieces)


#: Every time the pgjobs admin shows, in the current time zone, to the second.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@register.filter
def when(value: datetime.datetime | None) -> str:
    """A time as ``2026-12-05 14:03:27`` in the current time zone, in a <time> element
    that carries it in full (ISO 8601, with its offset) for tools and tooltips."""
    if not isinstance(value, datetime.datetime):
        return "—"
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    # An f-string, not format_html: the job list writes one per row.
    return SafeString(
        f'<time datetime="{escaped(local.isoformat())}" title="{escaped(local.tzname() or "")}">'
        f"{escaped(local.strftime(TIME_FORMAT))}</time>"
    )


def escaped(value: Any) -> str:
    """Django's ``escape`` without its wrapper for lazy strings, which cost as much as the
    escaping (the job list escapes some 800 values a page). Like ``escape``, it escapes
    safe strings too."""
    return html.escape(str(value))


def clipped(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters (``width`` >= 1), the last of them "…",
    combining characters not counted: Django's ``Truncator(text).chars(width)``, but
    with the ellipsis untranslated, as the rest of this admin. Truncator looks up the
    translation twice a call, 20 of its 30 µs; the job list clips two texts a row."""
    text = unicodedata.normalize("NFC", text)
    if len(text) <= width:
        return text  # fits: no more than ``width`` characters to count
    if text.isascii():
        return text[: width - 1] + ELLIPSIS  # no combining character among them
    seen, end = 0, 0
    for i, char in enumerate(text):
        if unicodedata.combining(char):
            continue
        seen += 1
        if seen == width:
            end = i  # where the ellipsis goes if there is more
        elif seen > width:
            return text[:end] + ELLIPSIS
    return text


ELLIPSIS = "…"


@register.filter
def elapsed(seconds: float | None) -> str:
    """How long something ran: 250ms, 4.2s, then as ``duration``."""
    if seconds is None or seconds == "":
        return "—"
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return duration(seconds)


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as a short human duration: 42s, 3m 5s, 2h 10m, 1d 4h."""
    if seconds is None or seconds == "":
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


#: A host clock further than this (seconds) from the database's is shown as a problem.
SKEW_SHOWN_AS_A_PROBLEM = 1.0


def clock_skew(seconds: float | None) -> str:
    """A host clock's measured skew against the database's: "in sync", "45.0 s ahead",
    "3.2 s behind" (HTML: more than ``SKEW_SHOWN_AS_A_PROBLEM`` is marked)."""
    from django.utils.html import format_html

    if seconds is None:
        return "—"
    if abs(seconds) < 0.05:
        return "in sync"
    text = f"{abs(seconds):.1f} s {'ahead' if seconds > 0 else 'behind'}"
    problem = abs(seconds) >= SKEW_SHOWN_AS_A_PROBLEM
    return format_html('<span class="pgjobs-{}">{}</span>', "stale" if problem else "live", text)


#: Django 6.0 made the admin's breadcrumbs an ordered list; before, a div of links
#: separated by &rsaquo;. Each version's CSS styles only its own markup.
BREADCRUMBS_AS_LIST = django.VERSION >= (6, 0)


@register.inclusion_tag("admin/pgjobs/breadcrumbs.html")
def pgjobs_breadcrumbs(*trail: str) -> dict[str, Any]:
    """Breadcrumbs in the markup of the Django version in use.

    ``trail`` alternates labels and URLs of the pages above, and ends with this
    page's label: ``{% pgjobs_breadcrumbs "Home" home_url "Jobs" jobs_url "#42" %}``.
    """
    *above, current = trail
    links = list(zip(above[::2], above[1::2], strict=True))
    return {"links": links, "current": current, "as_list": BREADCRUMBS_AS_LIST}
