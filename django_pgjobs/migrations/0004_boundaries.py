"""Rows no reader can choke on (issue 16): CHECK constraints refuse times outside
[0001-01-02, 9999-12-31) UTC, timeouts that are no finite number of seconds up to a
year, and queue backoffs no retry can be computed from; rows written before them are
first moved into range (sql/0004_boundaries.sql). JSON columns load a value Python
can't read back as its text instead of raising (``ReadableJSONField``; no SQL).
"""

import datetime

from django.db import migrations, models

import django_pgjobs.limits
import django_pgjobs.models
from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):
    # Each statement commits on its own: see sql/0004_boundaries.sql.
    atomic = False

    dependencies = [
        ('pgjobs', '0003_process_clock_skew'),
    ]

    operations = [
        # First the repairs of every table, then the job table's constraints, each added
        # NOT VALID and validated after: the table may hold millions of jobs, and only
        # VALIDATE reads them all, under a lock that lets enqueues and workers carry on.
        migrations.SeparateDatabaseAndState(
            database_operations=[run_sql_file("0004_boundaries")],
            state_operations=[
                migrations.AddConstraint(
                    model_name='job',
                    constraint=models.CheckConstraint(condition=models.Q(('run_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('run_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), ('created_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('created_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), models.Q(('attempted_at__isnull', True), models.Q(('attempted_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('attempted_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR'), models.Q(('finished_at__isnull', True), models.Q(('finished_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('finished_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR')), name='pgjobs_job_times_in_range'),
                ),
                migrations.AddConstraint(
                    model_name='job',
                    constraint=models.CheckConstraint(condition=models.Q(('timeout__isnull', True), models.Q(('timeout__gt', 0), ('timeout__lte', 31536000.0)), _connector='OR'), name='pgjobs_job_timeout_in_range'),
                ),
            ],
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='expires_at',
            field=models.DateTimeField(blank=True, null=True, validators=[django_pgjobs.limits.validate_time]),
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='connectors',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=list, help_text='Connectors its jobs may name explicitly; ["*"] for every connector.'),
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='queues',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=list, help_text='Queues it may enqueue into, read and run; ["*"] for every queue.'),
        ),
        migrations.AlterField(
            model_name='connector',
            name='config',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='connector',
            name='secret_names',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=list, editable=False),
        ),
        migrations.AlterField(
            model_name='job',
            name='args',
            field=django_pgjobs.models.ReadableJSONField(default=list),
        ),
        migrations.AlterField(
            model_name='job',
            name='errors',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=list),
        ),
        migrations.AlterField(
            model_name='job',
            name='kwargs',
            field=django_pgjobs.models.ReadableJSONField(default=dict),
        ),
        migrations.AlterField(
            model_name='job',
            name='meta',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='job',
            name='result',
            field=django_pgjobs.models.ReadableJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='schedule',
            name='args',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=list),
        ),
        migrations.AlterField(
            model_name='schedule',
            name='kwargs',
            field=django_pgjobs.models.ReadableJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='workerprocess',
            name='queues',
            field=django_pgjobs.models.ReadableJSONField(default=list),
        ),
        migrations.AddConstraint(
            model_name='apitoken',
            constraint=models.CheckConstraint(condition=models.Q(('created_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('created_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), models.Q(('expires_at__isnull', True), models.Q(('expires_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('expires_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR'), models.Q(('last_used_at__isnull', True), models.Q(('last_used_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('last_used_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR')), name='pgjobs_apitoken_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='connector',
            constraint=models.CheckConstraint(condition=models.Q(('created_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('created_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), ('updated_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('updated_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), name='pgjobs_connector_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='queue',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('backoff_strategy', ''), ('backoff_strategy__in', ('exponential', 'linear', 'fixed')), _connector='OR'), models.Q(('backoff_base__isnull', True), models.Q(('backoff_base__gte', 0), ('backoff_base__lte', 31536000.0)), _connector='OR'), models.Q(('backoff_max__isnull', True), models.Q(('backoff_max__gte', 0), ('backoff_max__lte', 31536000.0)), _connector='OR'), models.Q(('backoff_jitter__isnull', True), models.Q(('backoff_jitter__gte', 0), ('backoff_jitter__lte', 1)), _connector='OR')), name='pgjobs_queue_backoff_valid'),
        ),
        migrations.AddConstraint(
            model_name='queue',
            constraint=models.CheckConstraint(condition=models.Q(('updated_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('updated_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), name='pgjobs_queue_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='routine',
            constraint=models.CheckConstraint(condition=models.Q(('next_run_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('next_run_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), models.Q(('last_run_at__isnull', True), models.Q(('last_run_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('last_run_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR')), name='pgjobs_routine_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='schedule',
            constraint=models.CheckConstraint(condition=models.Q(('created_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('created_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), ('updated_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('updated_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), models.Q(('last_fire_at__isnull', True), models.Q(('last_fire_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('last_fire_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR'), models.Q(('next_fire_at__isnull', True), models.Q(('next_fire_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('next_fire_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), _connector='OR')), name='pgjobs_schedule_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='scheduletick',
            constraint=models.CheckConstraint(condition=models.Q(('fire_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('fire_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), ('fired_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('fired_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), name='pgjobs_tick_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='schedulerprocess',
            constraint=models.CheckConstraint(condition=models.Q(('started_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('started_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), ('heartbeat_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('heartbeat_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), name='pgjobs_schedulerprocess_times_in_range'),
        ),
        migrations.AddConstraint(
            model_name='workerprocess',
            constraint=models.CheckConstraint(condition=models.Q(('started_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('started_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc)), ('heartbeat_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('heartbeat_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), name='pgjobs_workerprocess_times_in_range'),
        ),
    ]
