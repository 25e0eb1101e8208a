"""Tasks the connector tests run."""

from __future__ import annotations

from typing import Any

from django_pgjobs import task
from django_pgjobs.connectors import CommandConnector, ConnectorKind, HttpConnector, SmtpConnector
from django_pgjobs.context import current_job


@task
def post_to(payload: dict[str, Any], connector: HttpConnector) -> dict[str, Any]:
    return connector.call(payload)


@task(connector="mailer")
def welcome(to: str, connector: SmtpConnector) -> int:
    return connector.send_mail("Welcome", "Hello from the queue", to, html="<p>Hello</p>")


@task(connector="mailer")
def newsletter(subjects: list[str], connector: SmtpConnector) -> int:
    """One message per subject, sent over one SMTP session."""
    from django.core.mail import EmailMessage

    messages = [
        EmailMessage(subject, f"About {subject}", to=["ada@example.com"]) for subject in subjects
    ]
    return connector.send(messages)


@task(connector="mailer")
def mail_then_fail_once(to: str, connector: SmtpConnector) -> int:
    """Sends its mail, then fails its first attempt."""
    sent = connector.send_mail("Receipt", "Paid", to)
    if current_job().job.attempt == 1:
        raise RuntimeError("failed after the mail went")
    return sent


@task
def connector_name() -> str:
    """Reads the connector from the job context instead of a parameter."""
    return current_job().connector.name


@task
def run_command(args: list[str], connector: CommandConnector) -> dict[str, Any]:
    return connector.run(args).as_dict()


def echoes(secrets: dict[str, Any]) -> str:
    """Each secret as servers and libraries echo it: raw, URL-encoded, in base64 at each
    alignment (as inside "user:password"), in hex, escaped in JSON, and in an auth header."""
    import base64
    import json
    import urllib.parse

    forms = []
    for value in map(str, secrets.values()):
        forms += [value, urllib.parse.quote(value), urllib.parse.quote_plus(value, safe="")]
        for prefix in ("", "u", "user:"):
            forms.append(base64.b64encode(f"{prefix}{value}".encode()).decode())
            forms.append(base64.urlsafe_b64encode(f"{prefix}{value}".encode()).decode())
        forms.append(json.dumps({"password": value}))
        for prefix in ("", "user:"):  # hex, as a digest or a byte dump prints it
            forms.append(f"{prefix}{value}".encode().hex())
            forms.append(f"{prefix}{value}".encode().hex().upper())
        basic = base64.b64encode(f"someone:{value}".encode()).decode()
        forms.append(f"Authorization: Basic {basic}")
    return " | ".join(forms)


@task
def echo_secrets(fail: bool, connector: ConnectorKind) -> str:
    """Returns, or fails with, the job connector's secrets in every form they travel in."""
    echoed = echoes(connector.secret_values())
    if fail:
        raise RuntimeError(f"the server said: {echoed}")
    return echoed


@task
def echo_secrets_of(name: str) -> None:
    """Fails with the secrets of a connector the task loads itself (not the job's)."""
    from django_pgjobs.connectors import get_connector

    raise RuntimeError(f"the server said: {echoes(get_connector(name).secret_values())}")


@task
def connect_to(dsn: str) -> None:
    """Connects to another database, as a task syncing two may: libpq quotes a DSN it
    can't parse, password included."""
    import psycopg

    psycopg.connect(dsn, connect_timeout=2).close()


@task
def return_bytes_echoing_a_secret(before: int, connector: ConnectorKind) -> bytes:
    """Returns what a server echoed as bytes (no JSON: stored as its repr, cut), the
    job connector's token ``before`` characters into it."""
    return b"x" * before + str(connector.secret("token")).encode() + b"y" * 5_000


@task
def read_secrets_of(name: str, fail: bool) -> dict[str, Any]:
    """Reads a connector's secrets off its row (``Connector.get_secrets()``, no
    ``get_connector``), then fails with them, or returns them, in every form they
    travel in, and as they are (a number a number)."""
    from django_pgjobs.models import Connector

    secrets = Connector.objects.get(name=name).get_secrets()
    if fail:
        raise RuntimeError(f"the server said: {echoes(secrets)}")
    return {"echoed": echoes(secrets), "secrets": secrets}
