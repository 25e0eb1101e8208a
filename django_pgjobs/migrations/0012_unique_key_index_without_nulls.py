"""The unique-key index leaves out jobs without a key.

A partial index still holds an entry for every row its condition matches, NULL
keys included: every job got one on insert and another on claim, though only
jobs with a key can ever collide. Lookups by key (``unique_key = ...``) imply
the key is not NULL, so they still use it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgjobs", "0011_linear_triggers"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="job",
            name="pgjobs_job_unique_key_active",
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("state__in", ["available", "executing", "retryable", "scheduled", "waiting"]),
                    ("unique_key__isnull", False),
                ),
                fields=("unique_key",),
                name="pgjobs_job_unique_key_active",
            ),
        ),
    ]
