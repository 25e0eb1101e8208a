"""The job table's constraints on its times, its state and its timeout, the same rules
written compactly (sql/0023_compact_job_checks.sql): PostgreSQL reads back and plans
every CHECK for every statement that writes the table. models.Job states them as
before (model validation, the admin), so the migration state doesn't change."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    # Each statement commits on its own: see sql/0023_compact_job_checks.sql.
    atomic = False

    dependencies = [("pgjobs", "0022_insert_job_announces_itself")]

    operations = [run_sql_file("0023_compact_job_checks")]
