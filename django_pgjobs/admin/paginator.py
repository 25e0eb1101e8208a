"""A changelist paginator that never counts a million rows."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db import OperationalError
from django.db.models import QuerySet

from .. import db, stats
from ..stats import Tally


class EstimatingPaginator(Paginator):
    """Counts exactly up to ``stats.COUNT_CAP`` rows; above that, trusts the planner.

    Django's paginator runs ``COUNT(*)`` on every page load, a full scan of the
    filtered rows. Here an exact count costs at most ``COUNT_CAP`` index rows, and a
    larger result is shown as an estimate ("≈1.2M jobs"): pages past the
    real end are simply empty.

    Under a filter no index serves (``countable=False``: a task, a date, a text
    search), even a capped count reads every row when few match. Then nothing is
    counted: the rows of the page asked for (``number``) and one more are found
    (``page_ids``), newest first, in a statement that may run ``SCAN_SECONDS``
    at most, and the count is exact only if that page is the last one; else it
    is the planner's estimate. ``timed_out`` says the scan was cut short by that limit,
    ``cancelled`` by an operator (``pg_cancel_backend``) before it.

    A page past the first ``COUNT_CAP`` jobs (``deep``) is found the same way, time
    limit included, even where the list is counted: an OFFSET reads every row before
    the page, and the last page of ten million completed jobs took 8 s.

    ``per_state``: the list's tallies per state, already counted (or, uncountable,
    estimated) for its tabs; the count (or the estimate) is their sum.
    """

    def __init__(
        self,
        object_list: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
        *,
        countable: bool = True,
        number: int = 1,
        per_state: dict[str, Tally] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(object_list, per_page, orphans, allow_empty_first_page, **kwargs)
        self.countable, self.number = countable, max(1, number)
        self.per_state = per_state
        self.timed_out = False
        self.cancelled = False  # by an operator (pg_cancel_backend), before the time limit

    @property
    def start(self) -> int:
        """How many jobs come before the page asked for."""
        return (self.number - 1) * self.per_page

    @property
    def deep(self) -> bool:
        return self.start >= stats.COUNT_CAP

    @cached_property
    def page_ids(self) -> list[int] | None:
        """Ids of the page's rows and of the next row, found within ``SCAN_SECONDS``;
        None for a counted list's first pages, which Django's slice finds."""
        if self.countable and not self.deep:
            return None
        start = self.start
        if start + self.per_page >= 2**63 - 1:
            return []  # no job has such a position (PostgreSQL's OFFSET would overflow)
        ids = self.object_list.values_list("pk", flat=True)[start : start + self.per_page + 1]
        using = self.object_list.db
        began = time.monotonic()
        try:
            # A time limit, and no parallel workers (they cost more to start than a
            # page's scan, and take the cores the workers need).
            with db.local_settings(
                using, statement_timeout=f"{SCAN_SECONDS}s", max_parallel_workers_per_gather="0"
            ):
                return list(ids)
        except OperationalError as error:
            why = db.cut_short(error, time.monotonic() - began, SCAN_SECONDS)
            if why is None:
                raise
            self.timed_out, self.cancelled = why == db.TIMED_OUT, why == db.CANCELLED
            return []

    @cached_property
    def tally(self) -> Tally:
        if self.countable:
            if self.per_state is None:
                return stats.tally(self.object_list)
            parts = self.per_state.values()
            return Tally(sum(t.value for t in parts), exact=all(t.exact for t in parts))
        ids, start = self.page_ids or [], self.start
        if (ids and len(ids) <= self.per_page) or (not ids and start == 0 and not self.cut_short):
            return Tally(start + len(ids))  # this page is the last: everything is known
        # More than this page (or a page past the end): at least what was seen.
        least = start + len(ids)
        if self.per_state is None:
            estimate = stats.estimate(self.object_list)
        else:
            estimate = sum(t.value for t in self.per_state.values())
        return Tally(max(estimate, least), exact=False)

    @property
    def past_the_end(self) -> bool:
        """Whether the page asked for, not the first, found no job: it has none to show
        (the count, "at least what was seen", may still say it exists)."""
        return self.page_ids == [] and self.number > 1 and not self.cut_short

    @property
    def cut_short(self) -> bool:
        """Whether the scan for the page stopped before it found it (``timed_out``,
        ``cancelled``)."""
        return self.timed_out or self.cancelled

    @cached_property
    def count(self) -> int:
        return self.tally.value

    @property
    def is_estimate(self) -> bool:
        return not self.tally.exact

    def shown(self, rows: QuerySet[Any]) -> QuerySet[Any]:
        """``rows`` (the changelist's whole queryset) cut to this page by ``page_ids``,
        so that the scan is not run again."""
        if self.page_ids is None:
            raise ValueError("a counted list's first pages are found by page(), not shown()")
        return rows.filter(pk__in=self.page_ids[: self.per_page]) if self.page_ids else rows.none()


#: How long the scan for a page under a filter no index serves may take.
SCAN_SECONDS = 5
