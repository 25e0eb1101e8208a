"""pgjobs' tables, indexes and constraints, as the models declare them.

The first operation refuses a database that is not PostgreSQL (or a
``PGJOBS["DATABASE"]`` alias that is not), before anything is created: the
triggers of 0002 need PostgreSQL, and a half-installed app is worse than none.

This migration and 0002 replace the development history 0001-0015 (never
published): a database migrated up to 0015 has them marked as applied and
changes nothing (docs/howto/upgrading.md).
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import django_pgjobs.models
from django_pgjobs.postgres import require_postgresql

# Jobs are updated in place two or more times in their life: a fillfactor of 70
# keeps the new row versions on their page, and autovacuum visits the table after
# 2% of it changed instead of 20%, so the claim index stays free of dead entries.
STORAGE = """
ALTER TABLE pgjobs_job SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
)
"""
STORAGE_RESET = """
ALTER TABLE pgjobs_job RESET (
    fillfactor, autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor
)
"""


def refuse_other_databases(apps, schema_editor):
    require_postgresql(schema_editor.connection.alias)


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("pgjobs", "0001_initial"),
        ("pgjobs", "0003_pipelines_events"),
        ("pgjobs", "0003_schedules"),
        ("pgjobs", "0004_connectors"),
        ("pgjobs", "0005_worker_process_plural"),
        ("pgjobs", "0012_unique_key_index_without_nulls"),
        ("pgjobs", "0015_count_indexes_without_claimable_jobs"),
    ]

    dependencies = []

    operations = [
        migrations.RunPython(refuse_other_databases, migrations.RunPython.noop),
        migrations.CreateModel(
            name="Queue",
            fields=[
                ("name", models.CharField(max_length=63, primary_key=True, serialize=False)),
                (
                    "concurrency",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="Most jobs of this queue executing at once across all workers; empty = no limit.",
                        null=True,
                    ),
                ),
                (
                    "priority",
                    models.SmallIntegerField(
                        default=0,
                        help_text="Workers serving several queues claim from higher values first.",
                    ),
                ),
                (
                    "paused",
                    models.BooleanField(
                        default=False, help_text="Paused queues start no new jobs."
                    ),
                ),
                (
                    "blocking",
                    models.BooleanField(
                        default=False,
                        help_text="Run one job at a time, in priority/run_at order; a job waiting for its retry holds the queue until it has run again.",
                    ),
                ),
                (
                    "max_attempts",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="Default for jobs of this queue; empty = PGJOBS setting.",
                        null=True,
                    ),
                ),
                (
                    "backoff_strategy",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("exponential", "exponential"),
                            ("linear", "linear"),
                            ("fixed", "fixed"),
                        ],
                        max_length=16,
                    ),
                ),
                ("backoff_base", models.FloatField(blank=True, help_text="Seconds.", null=True)),
                ("backoff_max", models.FloatField(blank=True, help_text="Seconds.", null=True)),
                (
                    "backoff_jitter",
                    models.FloatField(blank=True, help_text="Fraction, 0..1.", null=True),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["-priority", "name"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("name__regex", "^[A-Za-z0-9_.:-]+$")),
                        name="pgjobs_queue_name_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("max_attempts__isnull", True),
                            ("max_attempts__gte", 1),
                            _connector="OR",
                        ),
                        name="pgjobs_queue_max_attempts_positive",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="WorkerProcess",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("host", models.CharField(max_length=255)),
                ("pid", models.PositiveIntegerField()),
                ("queues", models.JSONField(default=list)),
                ("concurrency", models.PositiveIntegerField(default=1)),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "heartbeat_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
                ("stop_requested", models.BooleanField(default=False)),
            ],
            options={
                "verbose_name": "worker process",
                "verbose_name_plural": "worker processes",
                "ordering": ["-started_at"],
            },
        ),
        migrations.CreateModel(
            name="Job",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("task", models.CharField(max_length=255)),
                ("queue", models.CharField(max_length=63)),
                ("args", models.JSONField(default=list)),
                ("kwargs", models.JSONField(default=dict)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("waiting", "Waiting"),
                            ("scheduled", "Scheduled"),
                            ("available", "Available"),
                            ("executing", "Executing"),
                            ("retryable", "Retryable"),
                            ("completed", "Completed"),
                            ("discarded", "Discarded"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="available",
                        max_length=16,
                    ),
                ),
                ("priority", models.SmallIntegerField(default=0, help_text="Higher runs first.")),
                ("attempt", models.PositiveIntegerField(default=0)),
                ("max_attempts", models.PositiveIntegerField(default=20)),
                (
                    "timeout",
                    models.FloatField(blank=True, help_text="Seconds per attempt.", null=True),
                ),
                ("run_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("attempted_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("errors", models.JSONField(blank=True, default=list)),
                ("result", models.JSONField(blank=True, null=True)),
                ("unique_key", models.CharField(blank=True, max_length=255, null=True)),
                ("connector", models.CharField(blank=True, max_length=255, null=True)),
                ("lease", models.UUIDField(blank=True, editable=False, null=True)),
                ("pending_dependencies", models.PositiveIntegerField(default=0)),
                ("meta", models.JSONField(blank=True, default=dict)),
                (
                    "worker",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="jobs",
                        to="pgjobs.workerprocess",
                    ),
                ),
            ],
            options={
                "ordering": ["-id"],
                "indexes": [
                    models.Index(
                        models.F("queue"),
                        models.OrderBy(models.F("priority"), descending=True),
                        models.F("run_at"),
                        models.F("id"),
                        condition=models.Q(("state__in", ["available", "retryable", "scheduled"])),
                        include=("state",),
                        name="pgjobs_job_claim",
                    ),
                    models.Index(
                        condition=models.Q(("state", "executing")),
                        fields=["queue"],
                        name="pgjobs_job_executing",
                    ),
                    models.Index(
                        condition=models.Q(("state", "executing")),
                        fields=["worker"],
                        name="pgjobs_job_held",
                    ),
                    models.Index(
                        condition=models.Q(("state__in", ["cancelled", "completed", "discarded"])),
                        fields=["finished_at"],
                        name="pgjobs_job_finished",
                    ),
                    models.Index(
                        condition=models.Q(
                            (
                                "state__in",
                                [
                                    "cancelled",
                                    "completed",
                                    "discarded",
                                    "retryable",
                                    "scheduled",
                                    "waiting",
                                ],
                            )
                        ),
                        fields=["state", "queue"],
                        name="pgjobs_job_state_queue_rest",
                    ),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            (
                                "state__in",
                                [
                                    "waiting",
                                    "scheduled",
                                    "available",
                                    "executing",
                                    "retryable",
                                    "completed",
                                    "discarded",
                                    "cancelled",
                                ],
                            )
                        ),
                        name="pgjobs_job_state_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("max_attempts__gte", 1)),
                        name="pgjobs_job_max_attempts_positive",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("state", "executing"), _negated=True),
                            ("lease__isnull", False),
                            _connector="OR",
                        ),
                        name="pgjobs_job_executing_has_lease",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(
                            (
                                "state__in",
                                ["available", "executing", "retryable", "scheduled", "waiting"],
                            ),
                            ("unique_key__isnull", False),
                        ),
                        fields=("unique_key",),
                        name="pgjobs_job_unique_key_active",
                    ),
                ],
            },
        ),
        migrations.RunSQL(STORAGE, STORAGE_RESET),
        migrations.CreateModel(
            name="JobDependency",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("satisfied", models.BooleanField(default=False)),
                (
                    "depends_on",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="pgjobs.job",
                    ),
                ),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="pgjobs.job",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "job dependencies",
                "indexes": [
                    models.Index(fields=["job"], name="pgjobs_dependency_job"),
                    models.Index(
                        condition=models.Q(("satisfied", False)),
                        fields=["depends_on"],
                        name="pgjobs_dependency_unsatisfied",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("depends_on", "job"), name="pgjobs_dependency_unique"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("job", models.F("depends_on")), _negated=True),
                        name="pgjobs_dependency_not_self",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Schedule",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                (
                    "cron",
                    models.CharField(
                        help_text="minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' or '30 2 * * 1-5'; or @hourly, @daily, @weekly, @monthly, @yearly.",
                        max_length=100,
                        validators=[django_pgjobs.models.validate_cron],
                    ),
                ),
                (
                    "timezone",
                    models.CharField(
                        default=django_pgjobs.models.default_timezone,
                        help_text="IANA name, e.g. 'Europe/Berlin': the cron fields are read on this clock.",
                        max_length=63,
                        validators=[django_pgjobs.models.validate_timezone],
                    ),
                ),
                (
                    "task",
                    models.CharField(help_text="Dotted path of a @task function.", max_length=255),
                ),
                ("args", models.JSONField(blank=True, default=list)),
                ("kwargs", models.JSONField(blank=True, default=dict)),
                (
                    "queue",
                    models.CharField(
                        blank=True, help_text="Empty: the task's queue.", max_length=63
                    ),
                ),
                (
                    "priority",
                    models.SmallIntegerField(
                        blank=True, help_text="Empty: the task's priority.", null=True
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                (
                    "misfire",
                    models.CharField(
                        choices=[
                            ("catch_up", "Catch up: fire once for missed ticks"),
                            ("skip", "Skip missed ticks"),
                        ],
                        default="catch_up",
                        help_text="What to do with ticks missed while no scheduler ran.",
                        max_length=16,
                    ),
                ),
                ("last_fire_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("next_fire_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["name"],
                "indexes": [
                    models.Index(
                        condition=models.Q(("enabled", True)),
                        fields=["next_fire_at"],
                        name="pgjobs_schedule_due",
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("misfire__in", ["catch_up", "skip"])),
                        name="pgjobs_schedule_misfire_valid",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ScheduleTick",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("fire_at", models.DateTimeField(help_text="The tick: when the schedule was due.")),
                ("fired_at", models.DateTimeField(help_text="When a scheduler fired it.")),
                (
                    "error",
                    models.TextField(blank=True, help_text="Why no job was enqueued, if none was."),
                ),
                (
                    "job",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="schedule_ticks",
                        to="pgjobs.job",
                    ),
                ),
                (
                    "schedule",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="ticks",
                        to="pgjobs.schedule",
                    ),
                ),
            ],
            options={
                "ordering": ["-fire_at"],
                "indexes": [models.Index(fields=["fired_at"], name="pgjobs_tick_fired_at")],
                "constraints": [
                    models.UniqueConstraint(fields=("schedule", "fire_at"), name="pgjobs_tick_once")
                ],
            },
        ),
        migrations.CreateModel(
            name="Routine",
            fields=[
                ("name", models.CharField(max_length=63, primary_key=True, serialize=False)),
                ("next_run_at", models.DateTimeField()),
                ("last_run_at", models.DateTimeField(blank=True, null=True)),
                ("last_result", models.CharField(blank=True, max_length=255)),
            ],
            options={
                "verbose_name": "maintenance routine",
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="Connector",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="What jobs name it by: letters, digits, '_', '-', '.' or ':'.",
                        max_length=100,
                        unique=True,
                    ),
                ),
                ("kind", models.CharField(max_length=50)),
                ("description", models.TextField(blank=True)),
                ("config", models.JSONField(blank=True, default=dict)),
                (
                    "concurrency",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="Most jobs using this connector at once across all workers; empty = no limit.",
                        null=True,
                    ),
                ),
                ("encrypted_secrets", models.TextField(blank=True, default="", editable=False)),
                ("secret_names", models.JSONField(blank=True, default=list, editable=False)),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["name"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("name__regex", "^[A-Za-z0-9_.:-]+$")),
                        name="pgjobs_connector_name_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("concurrency__isnull", True), ("concurrency__gte", 1), _connector="OR"
                        ),
                        name="pgjobs_connector_concurrency_positive",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(help_text="Who or what uses it.", max_length=100)),
                ("token_hash", models.CharField(editable=False, max_length=64, unique=True)),
                (
                    "prefix",
                    models.CharField(
                        editable=False,
                        help_text="The token's first characters, to recognise it.",
                        max_length=12,
                    ),
                ),
                (
                    "queues",
                    models.JSONField(
                        blank=True,
                        default=list,
                        help_text='Queues it may enqueue into, read and run; ["*"] for every queue.',
                    ),
                ),
                (
                    "connectors",
                    models.JSONField(
                        blank=True,
                        default=list,
                        help_text='Connectors its jobs may name explicitly; ["*"] for every connector.',
                    ),
                ),
                ("can_enqueue", models.BooleanField(default=True, help_text="POST /jobs")),
                ("can_read", models.BooleanField(default=True, help_text="GET /jobs/<id>")),
                ("can_run", models.BooleanField(default=False, help_text="POST /jobs/run")),
                ("active", models.BooleanField(default=True, help_text="Untick to revoke.")),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                ("last_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
            ],
            options={
                "verbose_name": "API token",
                "ordering": ["name"],
            },
        ),
    ]
