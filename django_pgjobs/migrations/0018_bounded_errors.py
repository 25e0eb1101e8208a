"""A job keeps at most 20 error records, the first and the latest 19, and counts the
others in meta.errors_dropped (sql/0018_bounded_errors.sql): a job retried without end
grew a row, and an admin page, of tens of megabytes."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0017_failed_by_id_index")]

    operations = [run_sql_file("0018_bounded_errors")]
