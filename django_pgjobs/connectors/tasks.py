"""The task behind "call this connector with this payload", for jobs that need no code.

    Job.enqueue("django_pgjobs.connectors.tasks.call", kwargs={"payload": {...}},
                connector="billing-webhook")

``payload`` means what the connector's kind makes of it: the JSON body of an
``http`` call, the ``subject``/``body``/``to`` of an ``smtp`` mail, the
``args``/``input`` of a ``command``. The kind's answer is the job's result.
"""

from __future__ import annotations

from typing import Any

from ..context import current_job
from ..exceptions import DiscardJob
from ..tasks import task
from .base import ConnectorKind
from .errors import ConnectorRefused


@task
def call(payload: Any = None, connector: ConnectorKind | None = None) -> Any:
    if connector is None:
        context = current_job()
        connector = context.connector if context else None
    if connector is None:
        raise DiscardJob("enqueue this task with connector='<name>'")
    if not isinstance(connector, ConnectorKind):
        # A "connector" in the job's kwargs is passed instead of the stored one (so a
        # task may take a name): here it was an AttributeError, retried to the end.
        raise DiscardJob(
            "name the connector with connector='<name>' on the job, not in its kwargs "
            f"(got {type(connector).__name__})"
        )
    try:
        return connector.call(payload)
    except TypeError as bad_payload:  # no retry makes a malformed payload right
        raise DiscardJob(f"bad payload for connector {connector.name!r}: {bad_payload}") from None
    except ConnectorRefused as refused:  # nor one a refusal by the connector's owner
        raise DiscardJob(str(refused)) from None
