"""The planner counts on few dependency edges per job, whatever ANALYZE sampled
(sql/0020_few_edges_per_job.sql): one job with 100,000 dependents made prune read the
whole job table for each finished job it looked at."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0019_linear_insert_events")]

    operations = [run_sql_file("0020_few_edges_per_job")]
