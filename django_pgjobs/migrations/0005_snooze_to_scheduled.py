"""A snooze moves a job from executing to scheduled: the state machine allows it
(sql/0005_snooze_to_scheduled.sql replaces pgjobs_job_transitioned)."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0004_boundaries")]

    operations = [run_sql_file("0005_snooze_to_scheduled")]
