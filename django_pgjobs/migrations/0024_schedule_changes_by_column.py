"""The schedule trigger's function compares a schedule's columns one by one, not the
whole row converted to jsonb twice on every tick (sql/0024_schedule_changes_by_column.sql)."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0023_compact_job_checks")]

    operations = [run_sql_file("0024_schedule_changes_by_column")]
