"""Schedules: jitter, an overlap policy, a catch-up policy in place of misfire (its values
mapped: catch_up -> latest, skip -> none), and the last job they enqueued, which changes
nothing schedulers need to hear of (sql/0006_schedule_policies.sql).
"""

import django.core.validators
import django.db.models.deletion
import django_pgjobs.models
from django.db import migrations, models

from django_pgjobs.migrations import run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ('pgjobs', '0005_snooze_to_scheduled'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='schedule',
            name='pgjobs_schedule_misfire_valid',
        ),
        migrations.AddField(
            model_name='schedule',
            name='catch_up',
            field=models.CharField(choices=[('latest', 'latest: the latest missed tick, once'), ('all', 'all: every missed tick, up to the limit'), ('none', 'none: no missed tick (only one at most MISFIRE_GRACE late)')], default='latest', help_text='What fires for ticks missed while no scheduler ran.', max_length=8),
        ),
        migrations.AddField(
            model_name='schedule',
            name='catch_up_limit',
            field=models.PositiveSmallIntegerField(default=100, help_text='all: the most missed ticks fired at once, the latest ones (1-1000).', validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(1000)]),
        ),
        migrations.AddField(
            model_name='schedule',
            name='catch_up_window',
            field=models.PositiveIntegerField(blank=True, help_text='Seconds: missed ticks older than this never fire (latest, all). Empty: however old.', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(315360000)]),
        ),
        migrations.AddField(
            model_name='schedule',
            name='jitter',
            field=models.PositiveIntegerField(default=0, help_text="Seconds: each tick's job is due up to this much later (0-86400), the same delay for a tick on every scheduler; spreads schedules that share a time.", validators=[django.core.validators.MaxValueValidator(86400)]),
        ),
        migrations.AddField(
            model_name='schedule',
            name='last_job',
            field=models.ForeignKey(blank=True, db_constraint=False, editable=False, help_text="The last job a tick or 'run now' enqueued: what the overlap policy watches.", null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='pgjobs.job'),
        ),
        migrations.AddField(
            model_name='schedule',
            name='overlap',
            field=models.CharField(choices=[('allow', 'allow: fire whatever the previous job is doing'), ('skip', 'skip: not while the previous job is unfinished'), ('queue', 'queue: at most one job waiting behind the running one')], default='allow', help_text="What a tick does while the schedule's previous job is unfinished.", max_length=8),
        ),
        migrations.AlterField(
            model_name='schedule',
            name='cron',
            field=models.CharField(help_text="minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' or '30 2 * * 1-5'; a sixth field first for seconds ('*/10 * * * * *'); @hourly, @daily, @weekly, @monthly, @yearly; or an interval of elapsed time: '@every 30s', '@every 1h30m'.", max_length=100, validators=[django_pgjobs.models.validate_cron]),
        ),
        migrations.AddConstraint(
            model_name='schedule',
            constraint=models.CheckConstraint(condition=models.Q(('catch_up__in', ['latest', 'all', 'none'])), name='pgjobs_schedule_catch_up_valid'),
        ),
        migrations.AddConstraint(
            model_name='schedule',
            constraint=models.CheckConstraint(condition=models.Q(('overlap__in', ['allow', 'skip', 'queue'])), name='pgjobs_schedule_overlap_valid'),
        ),
        migrations.AddConstraint(
            model_name='schedule',
            constraint=models.CheckConstraint(condition=models.Q(('jitter__gte', 0), ('jitter__lte', 86400), ('catch_up_limit__gte', 1), ('catch_up_limit__lte', 1000), models.Q(('catch_up_window__isnull', True), models.Q(('catch_up_window__gte', 1), ('catch_up_window__lte', 315360000)), _connector='OR')), name='pgjobs_schedule_policies_in_range'),
        ),
        # misfire's values into catch_up, before misfire goes; the trigger function.
        run_sql_file("0006_schedule_policies"),
        migrations.RemoveField(
            model_name='schedule',
            name='misfire',
        ),
    ]
