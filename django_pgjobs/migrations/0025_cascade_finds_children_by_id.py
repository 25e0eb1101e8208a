"""The cancelling loop of pgjobs_job_transitioned finds each level's dependents by id, not
through the index of waiting jobs (sql/0025_cascade_finds_children_by_id.sql): with few
jobs taken to be waiting, each level read every waiting job against every other."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0024_schedule_changes_by_column")]

    operations = [run_sql_file("0025_cascade_finds_children_by_id")]
