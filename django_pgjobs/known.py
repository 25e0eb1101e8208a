"""Names of stored rows (queues, connectors), cached per process and read again on a miss."""

from __future__ import annotations

from django.apps import apps

from . import conf


class KnownNames:
    """The ``name`` column of the model ``label`` ("pgjobs.Queue") in the jobs database.

    A name found once costs no query after; a miss reads every name again, so a row
    created a moment ago counts at once and a steady state costs nothing. A row deleted
    since it was read still counts until the next miss: callers find that out later
    (a job naming it fails when it runs).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._names: frozenset[str] = frozenset()

    def __contains__(self, name: str) -> bool:
        if name in self._names:
            return True
        model = apps.get_model(self.label)
        # One assignment, no lock: a reader on another thread sees the old set or the new.
        self._names = frozenset(
            model.objects.using(conf.get("DATABASE")).values_list("name", flat=True)
        )
        return name in self._names

    @property
    def names(self) -> frozenset[str]:
        """The names as last read (after a miss, those of now)."""
        return self._names
