"""The index of pending debounced jobs (issue 20): enqueue finds the pending job of a
debounce key in a queue through it (sql/pending_debounced.sql). The key lives in
``meta["debounce"]["key"]``, like the job's other flags, so the index is on that
expression; only scheduled and available jobs with a key are in it. Built
concurrently: enqueues and workers never wait for it (migrations/README.md)."""

from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("pgjobs", "0008_unique_keys_per_queue"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS pgjobs_job_debounce_pending "
            "ON pgjobs_job (queue, (meta -> 'debounce' ->> 'key')) "
            "WHERE state IN ('scheduled', 'available') "
            "AND (meta -> 'debounce' ->> 'key') IS NOT NULL",
            reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS pgjobs_job_debounce_pending",
        ),
    ]
