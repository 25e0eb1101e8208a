"""An index of jobs with a unique key, ``pgjobs_job_unique_key_since (queue,
unique_key, created_at) WHERE unique_key IS NOT NULL``: a ``unique_for`` task's enqueue
looks for a job of its key enqueued within the window, whatever its state, and only
active jobs' keys were indexed (``pgjobs_job_queue_unique_key_active``), so each such
enqueue read the whole job table while holding the key's lock (100 ms at a million
jobs, a parallel sequential scan). Jobs without a key are no entry: an enqueue or a
drain of them writes nothing more.

Built concurrently: enqueues and workers never wait (migrations/README.md)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("pgjobs", "0027_workerprocess_failing")]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(("unique_key__isnull", False)),
                fields=["queue", "unique_key", "created_at"],
                name="pgjobs_job_unique_key_since",
            ),
        ),
    ]
