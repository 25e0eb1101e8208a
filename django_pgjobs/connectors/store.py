"""Finding stored connectors: by name at enqueue, and fully built at run time."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from .. import conf, limits
from ..context import current_job
from ..exceptions import UnknownConnector
from ..known import KnownNames
from ..payload import names_in
from ..queues import NAME_CHARACTERS
from .base import ConnectorKind
from .errors import ConnectorMisconfigured
from .registry import check_stored

#: What a connector's name may be (its CHECK constraint; Connector.name is varchar(100)).
CONNECTOR_NAME = re.compile(rf"^{NAME_CHARACTERS}{{1,100}}\Z")  # not "$": see queues.QUEUE_NAME

_stored = KnownNames("pgjobs.Connector")


def check_known(name: object) -> str:
    """Return ``name`` if a connector has it; raise UnknownConnector otherwise.

    Names are cached per process and the cache is refreshed on a miss (like
    queues), so enqueueing many jobs costs one query at most and a connector
    created a moment ago is usable at once. A connector deleted since is found
    out when the job runs.
    """
    if not isinstance(name, str) or not CONNECTOR_NAME.match(name):
        raise UnknownConnector(name)  # no connector can have that name: no need to look
    if name not in _stored:
        # The miss read the names again: a typo is told the connector it missed (not
        # by the API, whose callers may name only the connectors of their token).
        close = difflib.get_close_matches(name, sorted(_stored.names), n=1)
        raise UnknownConnector(name, close[0] if close else None)
    return name


def get_connector(name: str) -> ConnectorKind:
    """Load the connector called ``name`` from the database, secrets decrypted.

    What a task receives; usable outside jobs too (a view, a shell). Each call
    reads the current row, so rotated URLs and passwords apply at once.
    """
    return build(load(name, conf.get("DATABASE")))


#: What a job's connector is built from, read only within ``shown.limit()`` each.
BUILT_FROM = ("config", "encrypted_secrets", "secret_names")


def load(name: str, using: str) -> Any:
    """The stored row of connector ``name``, without its description, and with its
    config and secrets only if each is within ``shown.limit()``: a row written by SQL
    may hold 255 MB in each, and every job using it would load it. UnknownConnector if
    there is none; ConnectorMisconfigured, naming the value and its size, for a value
    over the limit. A name no connector can have (``CONNECTOR_NAME``) is unknown
    without a query: a NUL was PostgreSQL's DataError, a lone surrogate psycopg's
    UnicodeEncodeError."""
    from .. import shown
    from ..models import Connector

    if not isinstance(name, str) or not CONNECTOR_NAME.match(name):
        raise UnknownConnector(name)
    rows = Connector.objects.using(using).filter(name=name).defer("description")
    stored = shown.within(rows, BUILT_FROM).first()
    if stored is None:
        raise UnknownConnector(name)
    if too_large := shown.unpack(stored, BUILT_FROM, verb="read"):
        raise ConnectorMisconfigured(stored.name, too_large)
    return stored


def size_problem(size: int, kind: str) -> str | None:
    """Why a value of ``size`` bytes (its ``kind``: JSON, text) can't be written to a
    connector: over what ``load`` reads of it, so every job using it would fail."""
    from .. import shown

    most = shown.limit()
    if size <= most:
        return None
    return (
        f"its {kind} is {size:,} bytes, over the {most:,} a job reads (twice "
        "PGJOBS['MAX_PAYLOAD_BYTES']): every job using the connector would fail"
    )


def config_size(config: dict[str, Any]) -> int:
    """The bytes of ``config`` as PostgreSQL writes a jsonb as text (what ``load``
    measures): spaced out, in UTF-8."""
    return len(json.dumps(config, ensure_ascii=False, separators=(", ", ": ")).encode())


def build(stored: Any) -> ConnectorKind:
    """The connector of a stored row, secrets decrypted. Inside a job, its secrets are
    masked from then on in whatever the job leaves behind (error, result, log): read
    through ``get_secrets``, which registers them (``mask_in_running_job``)."""
    kind_class = check_stored(stored)
    secrets = stored.get_secrets()
    if problem := names_problem(names_in(stored.secret_names), secrets):
        raise ConnectorMisconfigured(stored.name, {"secret_names": problem})
    return kind_class(stored.name, dict(stored.config), secrets)


def names_problem(names: list[str], secrets: dict[str, Any]) -> str | None:
    """Why the stored secret names don't match the secrets, or None. The admin shows the
    names; a row whose columns were changed apart (an UPDATE of one, a partial restore)
    said "Stored: token" while its jobs called without one."""
    again = "(its columns were changed apart: by SQL, a partial restore): enter the secrets again"
    if missing := [name for name in names if name not in secrets]:
        listed = ", ".join(map(limits.shown, missing))
        return f"lists {listed}, which the stored secrets don't hold {again}"
    if unlisted := sorted(name for name in secrets if name not in names):
        listed = ", ".join(map(limits.shown, unlisted))
        return f"don't list {listed}, which the stored secrets hold {again}"
    return None


def mask_in_running_job(stored: Any, secrets: dict[str, Any]) -> None:
    """Mask the ``secrets`` of the stored connector ``stored``, as its kind masks them
    (``masked_values``: the parts of http's url secret that travel alone, too), in what
    the running job leaves behind; outside a job, nothing. A row whose kind no longer
    exists, or whose config its kind refuses, still has its values masked."""
    running = current_job()
    if running is None or not secrets:
        return
    values: list[Any] = list(secrets.values())
    try:
        kind_class = check_stored(stored)
        values += kind_class(stored.name, dict(stored.config), secrets).masked_values()
    except ConnectorMisconfigured:  # the values are masked whatever the kind says
        pass
    running.add_secrets(values)
