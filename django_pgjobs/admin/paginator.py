"""A changelist paginator that never counts a million rows."""

from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator

from ..stats import Tally, tally


class EstimatingPaginator(Paginator):
    """Counts exactly up to ``stats.COUNT_CAP`` rows; above that, trusts the planner.

    Django's paginator runs ``COUNT(*)`` on every page load, a full scan of the
    filtered rows. Here an exact count costs at most ``COUNT_CAP`` index rows, and a
    larger result is shown as an estimate ("≈1.2M jobs"): pages past the
    real end are simply empty.
    """

    @cached_property
    def tally(self) -> Tally:
        return tally(self.object_list)

    @cached_property
    def count(self) -> int:
        return self.tally.value

    @property
    def is_estimate(self) -> bool:
        return not self.tally.exact
