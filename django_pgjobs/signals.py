"""Signals sent in the process where a job changes state. Receivers get ``job=``."""

from django.dispatch import Signal

job_enqueued = Signal()
job_started = Signal()
job_completed = Signal()
job_retrying = Signal()
job_discarded = Signal()
job_cancelled = Signal()
