"""Connectors: named, stored configurations of external systems that jobs use.

``Connector`` rows (admin: Background jobs → Connectors) hold a kind, its plain
config and encrypted secrets. A job enqueued with ``connector="name"`` gets
the connector loaded from the database when it runs::

    @task(connector="mailer")
    def send_welcome(user_id: int, connector: SmtpConnector) -> None:
        connector.send_mail("Welcome", "...", to=[...])

The instance is also ``current_job().connector``. See docs/connectors.md.
"""

from .base import REQUIRED, ConnectorKind, Option
from .command import CommandConnector, CommandFailed, CommandResult, CommandTimeout
from .errors import (
    ConnectorBusy,
    ConnectorError,
    ConnectorMisconfigured,
    ConnectorRefused,
    ConnectorThrottled,
    UnknownConnectorKind,
)
from .http import HttpConnector, HttpResponse, HttpStatusError
from .registry import get_kind, kinds, register_kind
from .smtp import SmtpConnector, SmtpPartlySent
from .store import get_connector

__all__ = [
    "REQUIRED",
    "CommandConnector",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectorBusy",
    "ConnectorError",
    "ConnectorKind",
    "ConnectorMisconfigured",
    "ConnectorRefused",
    "ConnectorThrottled",
    "HttpConnector",
    "HttpResponse",
    "HttpStatusError",
    "Option",
    "SmtpConnector",
    "SmtpPartlySent",
    "UnknownConnectorKind",
    "get_connector",
    "get_kind",
    "kinds",
    "register_kind",
]
