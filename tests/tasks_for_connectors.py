"""Tasks the connector tests run."""

from __future__ import annotations

from typing import Any

from django_pgjobs import task
from django_pgjobs.connectors import CommandConnector, HttpConnector, SmtpConnector
from django_pgjobs.context import current_job


@task
def post_to(payload: dict[str, Any], connector: HttpConnector) -> dict[str, Any]:
    return connector.call(payload)


@task(connector="mailer")
def welcome(to: str, connector: SmtpConnector) -> int:
    return connector.send_mail("Welcome", "Hello from the queue", to, html="<p>Hello</p>")


@task
def connector_name() -> str:
    """Reads the connector from the job context instead of a parameter."""
    return current_job().connector.name


@task
def run_command(args: list[str], connector: CommandConnector) -> dict[str, Any]:
    return connector.run(args).as_dict()
