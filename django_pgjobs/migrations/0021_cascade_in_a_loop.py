"""Dependents are cancelled level after level in a loop, not by the trigger firing itself
again (sql/0021_cascade_in_a_loop.sql): a pipeline of 700 stages whose first job failed
ran out of stack, and its outcome could never be recorded."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0020_few_edges_per_job")]

    operations = [run_sql_file("0021_cascade_in_a_loop")]
