"""The triggers that wake workers, enforce the state machine, publish events,
release dependents and keep schedulers current: sql/0002_database_triggers.sql.

Replaces, with 0001_tables, the development history 0001-0015 (the trigger
functions as 0014 left them).
"""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    replaces = [
        ("pgjobs", "0002_triggers"),
        ("pgjobs", "0009_performance"),
        ("pgjobs", "0010_event_batches"),
        ("pgjobs", "0011_linear_triggers"),
        ("pgjobs", "0013_cheaper_transition_trigger"),
        ("pgjobs", "0014_insert_triggers_without_jit"),
    ]

    dependencies = [("pgjobs", "0001_tables")]

    operations = [run_sql_file("0002_database_triggers")]
