"""Counting jobs per state and queue no longer costs an index entry on every enqueue and claim.

``pgjobs_job_state_queue (state, queue)`` held every job, so each new job and
each claim (available -> executing) wrote an entry there besides those in the
claim and executing indexes, which hold the same jobs keyed by queue. Storing
10,000 new jobs spent a sixth of PostgreSQL's time on that one index.

- ``pgjobs_job_claim`` now carries ``state`` (``INCLUDE``): available jobs are
  counted from it without reading the table.
- ``pgjobs_job_executing (queue)`` already counts executing jobs.
- ``pgjobs_job_state_queue_rest (state, queue)`` replaces
  ``pgjobs_job_state_queue`` for every other state.

Every index is built ``CONCURRENTLY``, the new claim index beside the old one
(then renamed into its place), so that claims never go without one and no
write waits on the builds. On a large table this migration takes as long as
building two indexes over it.
"""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY can't run in a transaction

    dependencies = [("pgjobs", "0014_insert_triggers_without_jit")]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("queue"),
                models.OrderBy(models.F("priority"), descending=True),
                models.F("run_at"),
                models.F("id"),
                condition=models.Q(state__in=["available", "retryable", "scheduled"]),
                include=("state",),
                name="pgjobs_job_claim_with_state",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="pgjobs_job_claim"),
        migrations.RenameIndex(
            model_name="job", old_name="pgjobs_job_claim_with_state", new_name="pgjobs_job_claim"
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                fields=["state", "queue"],
                condition=models.Q(
                    state__in=[
                        "cancelled",
                        "completed",
                        "discarded",
                        "retryable",
                        "scheduled",
                        "waiting",
                    ]
                ),
                name="pgjobs_job_state_queue_rest",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="pgjobs_job_state_queue"),
    ]
