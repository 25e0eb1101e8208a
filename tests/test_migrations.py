"""Migrations install the triggers and take them away again."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def trigger_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'pgjobs_%%'"
        )
        return {row[0] for row in cursor.fetchall()}


def test_triggers_are_installed_and_reversible():
    expected = {
        "pgjobs_job_inserted",
        "pgjobs_job_made_available",
        "pgjobs_job_transition",
        "pgjobs_queue_changed",
        "pgjobs_job_published",
        "pgjobs_schedule_changed",
        "pgjobs_schedule_replan",
    }
    assert trigger_names() == expected
    call_command("migrate", "pgjobs", "0001", verbosity=0)
    try:
        assert trigger_names() == set()
    finally:
        call_command("migrate", "pgjobs", verbosity=0)
    assert trigger_names() == expected


def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_the_claim_query_uses_the_claim_index():
    from django_pgjobs import db

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN " + db.statement("claim"),
            {
                "queue": "default",
                "limit": 10,
                "now": "2026-01-01T00:00:00Z",
                "worker_id": None,
                "states": ["available", "retryable", "scheduled"],
            },
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "pgjobs_job_claim" in plan, plan
