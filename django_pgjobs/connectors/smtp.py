"""The ``smtp`` kind: send mail through Django's SMTP email backend.

Config: ``host``, ``port`` (25, or 587 with ``use_tls``, 465 with ``use_ssl``),
``username``, ``use_tls`` (STARTTLS), ``use_ssl``, ``timeout`` (10 s),
``from_email`` (default ``DEFAULT_FROM_EMAIL``). Secret: ``password``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
from collections.abc import Iterator, Sequence
from email.headerregistry import AddressHeader
from typing import Any

import django
from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.utils import DNS_NAME

from ..limits import shown
from . import deadline, sent_mail
from .base import ConnectorKind, Option, seconds, secret_frames
from .errors import ConnectorError, ConnectorMisconfigured
from .registry import register_kind

logger = logging.getLogger(__name__)


def _port(value: int | None) -> str | None:
    return None if value is None or 0 < value < 65536 else "must be between 1 and 65535"


#: A host name, an IPv4 address or an IPv6 one (bare or in brackets).
HOST = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[?[0-9A-Fa-f:.]+\]?)\Z")


def _host(host: str) -> str | None:
    if not host:
        return "is required"
    if HOST.match(host):
        return None
    # Not shown: "smtp://user:password@mail.example.com" is the likely slip, and it
    # would be copied into every error of every job.
    return (
        "must be a host name or an IP address, not a URL; put the user in username "
        "and the password in the password secret"
    )


def _one_line(value: str) -> str | None:
    # A line break is a header of its own (Bcc: ...): Django refuses it when sending.
    return "must be on one line" if "\n" in value or "\r" in value else None


#: smtplib sends AUTH (PLAIN, LOGIN, CRAM-MD5) in ASCII only: any other character
#: failed every send with UnicodeEncodeError, after connecting.
NOT_ASCII = "{what} must be ASCII: smtplib sends the login in ASCII only (every send would fail)"


def _not_ascii(field: str, value: Any, what: str) -> dict[str, str]:
    """``{field: why}`` for login text smtplib can't send; of any shape (a row
    written by SQL), only text is judged."""
    if isinstance(value, str) and not value.isascii():
        return {field: NOT_ASCII.format(what=what)}
    return {}


def _recipients(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise TypeError(f"recipients must be an address or a list of addresses, not {value!r}")


def _check_mail(payload: dict[str, Any]) -> None:
    """TypeError naming the field of a payload no server takes: a header with a line
    break, an address Django's backend refuses (as it parses one: no domain is fine),
    an ``html`` that is no text. Each failed an attempt and was retried to the end (an
    html of 5 as ``KeyError: 'builtins.int'``); ``call`` discards the job at once."""
    html = payload.get("html")
    if html and not isinstance(html, str):
        raise TypeError(f"smtp payload: html must be text, not {shown(html)}")
    for field in ("subject", "from_email"):
        if isinstance(payload.get(field), str) and _LINE_BREAK.search(payload[field]):
            raise TypeError(f"smtp payload: {field} holds a line break: {shown(payload[field])}")
    for field in ("from_email", "to", "cc", "bcc", "reply_to"):
        value = payload.get(field)
        addresses = [value] if isinstance(value, str) else value
        for address in addresses if isinstance(addresses, list) else ():
            if isinstance(address, str) and (problem := _address_problem(address)):
                raise TypeError(f"smtp payload: {field} {shown(address)} {problem}")


_LINE_BREAK = re.compile(r"[\r\n]")


def _address_problem(address: str) -> str | None:
    """Why Django's SMTP backend refuses ``address`` (``prep_address``), or None."""
    if not address:
        return None  # an empty from_email: the config's, then DEFAULT_FROM_EMAIL
    parsed = AddressHeader.value_parser(address)
    defects = {str(defect) for defect in parsed.all_defects}
    defects.discard("addr-spec local part with no domain")  # Django's "webmaster"
    if _LINE_BREAK.search(address):
        return "holds a line break"
    if defects:
        return f"is no address ({'; '.join(sorted(defects))})"
    if len(parsed.all_mailboxes) != 1:
        return "must be a single address"
    return None


class SmtpPartlySent(ConnectorError):
    """A send failed after the server accepted some of its messages: ``sent`` of
    ``total`` (in an earlier attempt of the job, or this one)."""

    def __init__(self, failure: ConnectorError, sent: int, total: int, in_job: bool) -> None:
        self.sent, self.total = sent, total
        then = (
            "a retry of this job sends only the others"
            if in_job
            else "sending them all again sends those twice"
        )
        super().__init__(f"{failure} (after {sent} of {total} messages were accepted; {then})")


#: A message to send, its fingerprint and which occurrence of it in the job's attempt
#: (None, 0 outside a job, where nothing is recorded).
Pending = tuple[EmailMessage, str | None, int]


def _unsent(messages: Sequence[EmailMessage], ledger: sent_mail.Ledger | None) -> list[Pending]:
    """The messages no earlier attempt of the job sent."""
    if ledger is None:
        return [(message, None, 0) for message in messages]
    _know_local_name()  # building a message names this host in its Message-ID
    marked = [sent_mail.fingerprint(message) for message in messages]
    counted = [(m, mark, ledger.occurrence(mark)) for m, mark in zip(messages, marked, strict=True)]
    pending = [item for item in counted if not ledger.sent_before(item[1], item[2])]
    if len(pending) < len(messages):
        logger.info(
            "job %s: %s of %s messages were sent by an earlier attempt, not sent again",
            ledger.context.job.pk,
            len(messages) - len(pending),
            len(messages),
        )
    return pending


class _WatchedSMTP(smtplib.SMTP):
    """smtplib's client, its sockets kept to the current deadline (``deadline.bounding``)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # SMTP_SSL's _get_socket calls this one before its TLS handshake; the TLS socket
        # (of STARTTLS too) shares the descriptor the deadline shuts.
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        return deadline.create_connection((host, port), timeout, self.source_address)


class _WatchedSMTPSSL(smtplib.SMTP_SSL, _WatchedSMTP):
    pass


class _Backend(EmailBackend):
    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return _WatchedSMTPSSL if self.use_ssl else _WatchedSMTP

    @secret_frames
    def open(self) -> bool | None:
        _know_local_name()
        return super().open()


_local_name_known = False


def _know_local_name() -> None:
    """Django's SMTP backend names this host in EHLO by a lookup of its own name
    (``socket.getfqdn``, cached for the process once it answers): made within the
    deadline, so a resolver that hangs can't hold the first mail past the timeout."""
    global _local_name_known
    if not _local_name_known:
        deadline.within(DNS_NAME.get_fqdn, "the lookup of this host's name", key="getfqdn")
        _local_name_known = True


@register_kind
class SmtpConnector(ConnectorKind):
    kind = "smtp"
    label = "SMTP (mail)"
    options = (
        Option("host", str, check=_host),
        Option("port", (int, type(None)), None, "Default: 25, 587 with TLS, 465 with SSL.", _port),
        Option("username", str, ""),
        Option("use_tls", bool, False, "STARTTLS after connecting."),
        Option("use_ssl", bool, False, "Implicit TLS from the start."),
        Option("timeout", (int, float), 10.0, "Seconds.", check=seconds),
        Option("from_email", str, "", "Default sender; empty: DEFAULT_FROM_EMAIL.", _one_line),
    )
    secrets = ("password",)

    @classmethod
    def check(cls, config: dict[str, Any]) -> dict[str, str]:
        if config["use_tls"] and config["use_ssl"]:
            return {"config.use_ssl": "use_tls and use_ssl exclude each other; set one"}
        return {}

    @classmethod
    def write_problems(cls, config: dict[str, Any]) -> dict[str, str]:
        return _not_ascii("config.username", config.get("username"), "the username")

    @classmethod
    def secret_problems(cls, values: dict[str, Any]) -> dict[str, str]:
        return _not_ascii("secrets.password", values.get("password"), "the password")

    def _check_login(self) -> None:
        """ConnectorMisconfigured, before connecting, for a login smtplib can't send:
        it raised UnicodeEncodeError naming a character of the password, and where."""
        username, password = self.config["username"], self.secret("password", "")
        if not (username and password):
            return  # Django's backend logs in only with both: the row works as it is
        problems = self.write_problems(self.config) | self.secret_problems(self.secret_values())
        if problems:
            raise ConnectorMisconfigured(self.name, problems)

    def backend(self) -> EmailBackend:
        """A Django email backend (connection) for this server: ``with ... as conn:``.
        ConnectorMisconfigured for a login smtplib can't send (not ASCII)."""
        self._check_login()
        options: dict[str, Any] = {
            "host": self.config["host"],
            "port": self._port(),
            "username": self.config["username"],
            "password": self.secret("password", ""),
            "use_tls": self.config["use_tls"],
            "use_ssl": self.config["use_ssl"],
            "timeout": self.config["timeout"],
        }
        if django.VERSION >= (6, 1):
            # Django 6.1 builds backends for MAILERS with an alias; doing the same
            # avoids the warning about constructing backends directly.
            options["alias"] = f"pgjobs-connector:{self.name}"
        return _Backend(**options)

    def _port(self) -> int:
        """The port connected to: the configured one, else the default of the protocol."""
        if self.config["port"] is not None:
            return self.config["port"]
        return 465 if self.config["use_ssl"] else 587 if self.config["use_tls"] else 25

    def send(self, messages: Sequence[EmailMessage]) -> int:
        """Send Django email messages over one connection; returns how many were sent.

        In a job, each message the server accepts is recorded in the job's row, and a
        retry of the job doesn't send it again (``sent_mail``): it counts as sent. A
        failure after some were accepted raises ``SmtpPartlySent``."""
        messages = list(messages)
        sender = self.config["from_email"] or settings.DEFAULT_FROM_EMAIL
        for message in messages:
            if not message.from_email or message.from_email == settings.DEFAULT_FROM_EMAIL:
                message.from_email = sender
        ledger = sent_mail.ledger()
        where = f"{self.config['host']}:{self._port()}"
        earlier = sent = 0
        try:
            with self._exchange(where):
                pending = _unsent(messages, ledger)
                earlier = len(messages) - len(pending)
                if pending:
                    with self.backend() as connection:
                        for message, mark, occurrence in pending:
                            if connection.send_messages([message]):
                                sent += 1
                                if ledger is not None and mark is not None:
                                    ledger.record(mark, occurrence)
        except ConnectorError as failure:
            if earlier + sent:
                partly = SmtpPartlySent(failure, earlier + sent, len(messages), ledger is not None)
                raise partly from None
            raise
        return earlier + sent

    @contextlib.contextmanager
    def _exchange(self, where: str) -> Iterator[None]:
        """The SMTP session inside bounded as a whole by the timeout: a server sending a
        byte each second never let one read wait it out. Its failures: ConnectorError."""
        timeout = self.config["timeout"]
        try:
            with deadline.bounding(timeout) as bound:
                try:
                    yield
                except (smtplib.SMTPException, OSError):
                    if not bound.ran_out():
                        raise
                    message = f"SMTP {where}: no whole exchange within the timeout ({timeout:g} s)"
                    raise ConnectorError(message) from None
        except (smtplib.SMTPException, OSError) as problem:
            raise ConnectorError(self.redact(f"SMTP {where}: {problem!r}")) from None

    def send_mail(
        self,
        subject: str,
        body: str,
        to: str | list[str],
        *,
        html: str | None = None,
        from_email: str | None = None,
        cc: str | list[str] | None = None,
        bcc: str | list[str] | None = None,
        reply_to: str | list[str] | None = None,
    ) -> int:
        message = EmailMultiAlternatives(
            subject=subject,
            body=body,
            from_email=from_email or None,
            to=_recipients(to),
            cc=_recipients(cc) if cc else None,
            bcc=_recipients(bcc) if bcc else None,
            reply_to=_recipients(reply_to) if reply_to else None,
        )
        if html:
            message.attach_alternative(html, "text/html")
        return self.send([message])

    def call(self, payload: Any = None, **options: Any) -> dict[str, Any]:
        """``payload``: {"subject", "body", "to", optional "html", "from_email", "cc",
        "bcc", "reply_to"}."""
        if not isinstance(payload, dict):
            raise TypeError('smtp payload must be an object: {"subject", "body", "to", ...}')
        known = {"subject", "body", "to", "html", "from_email", "cc", "bcc", "reply_to"}
        unknown = sorted(set(payload) - known)
        missing = sorted({"subject", "body", "to"} - set(payload))
        if unknown or missing:  # each named only when there is one
            wrong = [
                f"{what} keys {keys}"
                for what, keys in (("unknown", unknown), ("missing", missing))
                if keys
            ]
            raise TypeError(f"smtp payload: {', '.join(wrong)}")
        _check_mail(payload)
        sent = self.send_mail(**payload)
        return {"sent": sent, "to": _recipients(payload["to"])}

    def test(self) -> str:
        """Connect, say EHLO, start TLS and log in as configured; send nothing."""
        backend = self.backend()
        with self._exchange(f"{backend.host}:{backend.port}"):
            backend.open()
            backend.close()
        login = f" and logged in as {backend.username}" if backend.username else ""
        return f"connected to {backend.host}:{backend.port}{login}"
