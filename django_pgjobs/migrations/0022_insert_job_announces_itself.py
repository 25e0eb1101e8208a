"""pgjobs_insert_job sends its job's wake-up and event itself, and the insert trigger
skips the INSERTs it marks (sql/0022_insert_job_announces_itself.sql)."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0021_cascade_in_a_loop")]

    operations = [run_sql_file("0022_insert_job_announces_itself")]
