"""The unique-key index leaves out jobs without a key.

A partial index still holds an entry for every row its condition matches, NULL
keys included: every job got one on insert and another on claim, though only
jobs with a key can ever collide. Lookups by key (``unique_key = ...``) imply
the key is not NULL, so they still use it.

Built CONCURRENTLY under a temporary name, then swapped in: building an index
reads the whole job table, and a plain CREATE INDEX would block every enqueue
and every worker for as long as that takes. Uniqueness is enforced throughout
(by the old index until the new one is valid).
"""

from django.db import migrations, models

ACTIVE = "'available', 'executing', 'retryable', 'scheduled', 'waiting'"


def _swap_in(condition: str) -> list[str]:
    return [
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS pgjobs_job_unique_key_active_new"
        f" ON pgjobs_job (unique_key) WHERE ({condition})",
        "DROP INDEX CONCURRENTLY IF EXISTS pgjobs_job_unique_key_active",
        "ALTER INDEX pgjobs_job_unique_key_active_new RENAME TO pgjobs_job_unique_key_active",
    ]


WITHOUT_NULLS = f"state IN ({ACTIVE}) AND unique_key IS NOT NULL"
WITH_NULLS = f"state IN ({ACTIVE})"


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY can't run in a transaction

    dependencies = [
        ("pgjobs", "0011_linear_triggers"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(_swap_in(WITHOUT_NULLS), _swap_in(WITH_NULLS))],
            state_operations=[
                migrations.RemoveConstraint(
                    model_name="job",
                    name="pgjobs_job_unique_key_active",
                ),
                migrations.AddConstraint(
                    model_name="job",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(
                            ("state__in", ["available", "executing", "retryable", "scheduled", "waiting"]),
                            ("unique_key__isnull", False),
                        ),
                        fields=("unique_key",),
                        name="pgjobs_job_unique_key_active",
                    ),
                ),
            ],
        ),
    ]
