"""Each worker and scheduler records how far its host's clock is from the database's."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgjobs", "0002_database_triggers"),
    ]

    operations = [
        migrations.CreateModel(
            name="SchedulerProcess",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("host", models.CharField(max_length=255)),
                ("pid", models.PositiveIntegerField()),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("heartbeat_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "clock_skew",
                    models.FloatField(
                        blank=True,
                        help_text="Seconds this host's clock is ahead of the database's (negative: behind), as measured at the last pass. Ticks fire by the database's clock regardless.",
                        null=True,
                    ),
                ),
            ],
            options={
                "verbose_name": "scheduler process",
                "verbose_name_plural": "scheduler processes",
                "ordering": ["-started_at"],
            },
        ),
        migrations.AddField(
            model_name="workerprocess",
            name="clock_skew",
            field=models.FloatField(
                blank=True,
                help_text="Seconds this host's clock is ahead of the database's (negative: behind), as measured at the last heartbeat.",
                null=True,
            ),
        ),
    ]
