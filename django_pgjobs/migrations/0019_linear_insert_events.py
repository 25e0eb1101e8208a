"""The events of a many-row INSERT are made in linear time (sql/0019_linear_insert_events.sql):
a batch of n new jobs sorted n/300 copies of an n-element array, 1.1 GB of temp files
for 200,000 jobs."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0018_bounded_errors")]

    operations = [run_sql_file("0019_linear_insert_events")]
