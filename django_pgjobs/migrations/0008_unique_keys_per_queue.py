"""A unique key is unique within its queue, not across queues (issue 16: an API token
scoped to some queues could otherwise learn of, or occupy, another queue's keys).

The new index is built beside the old one, concurrently, then the old one dropped:
enqueues and workers never wait for either (migrations/README.md)."""

from django.db import migrations, models

ACTIVE_KEYS = (
    "WHERE state IN ('available', 'executing', 'retryable', 'scheduled', 'waiting') "
    "AND unique_key IS NOT NULL"
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("pgjobs", "0007_rate_limits"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "
                    "pgjobs_job_queue_unique_key_active ON pgjobs_job (queue, unique_key) "
                    + ACTIVE_KEYS,
                    reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS "
                    "pgjobs_job_queue_unique_key_active",
                ),
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS pgjobs_job_unique_key_active",
                    reverse_sql="CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "
                    "pgjobs_job_unique_key_active ON pgjobs_job (unique_key) " + ACTIVE_KEYS,
                ),
            ],
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
                        fields=("queue", "unique_key"),
                        name="pgjobs_job_queue_unique_key_active",
                    ),
                ),
            ],
        ),
    ]
