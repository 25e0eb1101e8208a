"""``pgjobs_job_rare_by_id (state, id)``, a partial index of the jobs of every state few
jobs are in at a time (waiting, scheduled, retryable, discarded, cancelled), in place
of ``pgjobs_job_failed_by_id`` (0017: discarded and cancelled alone). The job list
under a retryable, scheduled or waiting state (and ``pgjobs list --state``) reads its
newest 50 by id: the planner walked the primary key back through every newer job to
find them, 134 ms for 2,000 retryable jobs behind 398,000 newer ones (a table of
600,000), growing with the table. Available, executing and completed jobs are no
entry: an enqueue of a job due now, its claim and its completion write none.

Built concurrently beside the old one, which is then dropped: enqueues and workers
never wait, and the lists are never without an index (migrations/README.md)."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("pgjobs", "0028_unique_key_since_index")]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(
                    ("state__in", ["cancelled", "discarded", "retryable", "scheduled", "waiting"])
                ),
                fields=["state", "id"],
                name="pgjobs_job_rare_by_id",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="pgjobs_job_failed_by_id"),
    ]
