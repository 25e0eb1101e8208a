"""pgjobs_insert_job: the INSERT of one new job, planned once per session
(sql/0015_insert_job_function.sql; Job.enqueue calls it through sql/insert_job.sql)."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0014_one_insert_trigger")]

    operations = [run_sql_file("0015_insert_job_function")]
