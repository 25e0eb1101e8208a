"""Finding stored connectors: by name at enqueue, and fully built at run time."""

from __future__ import annotations

import re
from typing import Any

from .. import conf
from ..context import current_job
from ..exceptions import UnknownConnector
from ..known import KnownNames
from ..queues import NAME_CHARACTERS
from .base import ConnectorKind
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
        raise UnknownConnector(name)
    return name


def get_connector(name: str) -> ConnectorKind:
    """Load the connector called ``name`` from the database, secrets decrypted.

    What a task receives; usable outside jobs too (a view, a shell). Each call
    reads the current row, so rotated URLs and passwords apply at once.
    """
    from ..models import Connector

    stored = Connector.objects.using(conf.get("DATABASE")).filter(name=name).first()
    if stored is None:
        raise UnknownConnector(name)
    return build(stored)


def build(stored: Any) -> ConnectorKind:
    """The connector of a stored row, secrets decrypted. Inside a job, its secrets are
    masked from then on in whatever the job leaves behind (error, result, log)."""
    kind_class = check_stored(stored)
    secrets = stored.get_secrets()
    running = current_job()
    if running is not None and secrets:
        running.add_secrets(secrets.values())
    return kind_class(stored.name, dict(stored.config), secrets)
