"""One index of executing jobs, by queue and worker, in place of two (issue 18):
``pgjobs_job_executing (queue)`` and ``pgjobs_job_held (worker_id)`` became
``pgjobs_job_executing (queue, worker_id)``. Every claimed job was an entry in both;
one entry less costs a claim 2.5 us of server CPU per job less (bench/README.md, "The
backends' share, piece by piece"). Readers by queue use its first column as before;
readers by worker (rescue, a worker's forgotten jobs, the admin's workers) scan it
whole, that is only the jobs executing.

Built concurrently beside the old ones under another name, which are then dropped,
and renamed: queries never go without an index, and enqueues and workers never wait
(migrations/README.md)."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("pgjobs", "0015_insert_job_function")]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(("state", "executing")),
                fields=["queue", "worker"],
                name="pgjobs_job_executing_worker",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="pgjobs_job_held"),
        RemoveIndexConcurrently(model_name="job", name="pgjobs_job_executing"),
        migrations.RenameIndex(
            model_name="job",
            new_name="pgjobs_job_executing",
            old_name="pgjobs_job_executing_worker",
        ),
    ]
