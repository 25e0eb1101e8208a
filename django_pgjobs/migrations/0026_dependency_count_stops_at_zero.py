"""A dependency's finish counts it off its dependents no lower than zero
(sql/0026_dependency_count_stops_at_zero.sql): a job whose count was written lower
than its unfinished dependencies made their outcomes fail the CHECK."""

from django.db import migrations

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0025_cascade_finds_children_by_id")]

    operations = [run_sql_file("0026_dependency_count_stops_at_zero")]
