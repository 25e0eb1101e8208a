"""Mail a job's SMTP server accepted, recorded in the job's row as each is accepted, so
that a retry of the job (or its rescue after a crash) doesn't send it again.

A message is known by a fingerprint: an HMAC, keyed by SECRET_KEY, of its envelope
(sender, every recipient, Bcc too) and of the message as built, without what differs
each time it is built (its Date, its Message-ID, multipart boundaries). A retry that builds the same
message skips it; one that builds anything else sends it. The nth message of a
fingerprint in an attempt is skipped if earlier attempts had n accepted: a job may
send the same message twice on purpose.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections import Counter
from typing import Any

from django.core.exceptions import SynchronousOnlyOperation
from django.core.mail import EmailMessage
from django.db import DatabaseError, transaction
from django.utils.crypto import salted_hmac

from .. import conf, db
from ..context import JobContext, current_job
from ..transitions import SENT_MAIL_KEY

logger = logging.getLogger(__name__)

#: The key of the job's meta: {fingerprint: how many such messages were accepted}. An
#: operator's retry of a completed job drops it (transitions._meta_for_a_retry).
KEY = SENT_MAIL_KEY

_ledgers: weakref.WeakKeyDictionary[JobContext, Ledger] = weakref.WeakKeyDictionary()


#: Sets fingerprints apart from SECRET_KEY's other HMACs.
KEY_SALT = "django_pgjobs.connectors.sent_mail"


def fingerprint(message: EmailMessage) -> str:
    """32 hex digits of an HMAC-SHA-256 (keyed by SECRET_KEY) of the message's envelope
    and of the message as built, its Date, Message-ID and multipart boundaries left out.
    Keyed: the row is shown in the admin, the API and the CLI, and a plain hash of a
    message holding a short secret (a six-digit code) let its readers test guesses."""
    built = message.message()
    for name in ("Date", "Message-ID"):
        del built[name]
    for index, part in enumerate(built.walk()):
        if part.is_multipart():
            part.set_boundary(f"pgjobs-fingerprint-{index}")
    envelope = json.dumps([message.from_email, message.recipients()]).encode()
    digest = salted_hmac(KEY_SALT, envelope + built.as_bytes(), algorithm="sha256")
    return digest.hexdigest()[:32]


class Ledger:
    """One attempt of a job: what its earlier attempts recorded, what it sent since."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.recorded = recorded(context.job.meta)
        self.seen: Counter[str] = Counter()

    def occurrence(self, mark: str) -> int:
        """Which occurrence of ``mark`` in this attempt the next message is (from 1)."""
        self.seen[mark] += 1
        return self.seen[mark]

    def sent_before(self, mark: str, occurrence: int) -> bool:
        """Whether an earlier attempt had this occurrence of ``mark`` accepted."""
        return occurrence <= self.recorded[mark]

    def record(self, mark: str, occurrence: int) -> None:
        """This occurrence of ``mark`` was just accepted: write it in the job's row (in
        a savepoint: a failed write leaves the task's transaction usable)."""
        self.recorded[mark] = max(self.recorded[mark], occurrence)
        job = self.context.job
        times = self.recorded[mark]
        params = {"job": job.pk, "lease": job.lease, "fingerprint": mark, "times": times}
        using = conf.get("DATABASE")
        try:
            with transaction.atomic(using=using):
                db.execute("record_sent_mail", params, using)
        except (DatabaseError, SynchronousOnlyOperation) as problem:
            logger.warning(
                "job %s: a mail the SMTP server accepted could not be recorded, a retry "
                "of the job would send it again: %s",
                job.pk,
                problem,
            )


def recorded(meta: Any) -> Counter[str]:
    """The counts in ``meta["smtp_sent"]``; what isn't a count (a row written by hand)
    counts as nothing sent."""
    found = meta.get(KEY) if isinstance(meta, dict) else None
    if not isinstance(found, dict):
        return Counter()
    return Counter(
        {
            mark: times
            for mark, times in found.items()
            if isinstance(times, int) and not isinstance(times, bool) and times > 0
        }
    )


def ledger() -> Ledger | None:
    """The running job's ledger (one per attempt); None outside a job."""
    context = current_job()
    if context is None or context.job.pk is None:
        return None
    if context not in _ledgers:
        _ledgers[context] = Ledger(context)
    return _ledgers[context]
