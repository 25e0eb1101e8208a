"""One AFTER INSERT trigger in place of two, with a short path for an INSERT of one job
(sql/0014_one_insert_trigger.sql: pgjobs_announce_inserted wakes workers and publishes
events)."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0013_queue_key_rate_limit")]

    operations = [run_sql_file("0014_one_insert_trigger")]
