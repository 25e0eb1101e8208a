"""An index of discarded and cancelled jobs by id, ``pgjobs_job_failed_by_id (state,
id)``, for the job list under either state (issue 21): the newest 50 of a rare state
were found by walking the primary key back through every newer job of other states
(10,606 of them, 6 ms, at ten million jobs). Completed jobs are no entry, so a drain
of jobs that succeed writes nothing more.

Built concurrently: enqueues and workers never wait (migrations/README.md)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("pgjobs", "0016_one_executing_index")]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(("state__in", ["cancelled", "discarded"])),
                fields=["state", "id"],
                name="pgjobs_job_failed_by_id",
            ),
        ),
    ]
