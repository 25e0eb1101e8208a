"""Rate limits on queues and connectors (issue 20): their ``rate_limit`` and
``rate_period``, and the ``RateWindow`` table that keeps each limit's recent starts
(django_pgjobs/ratelimits.py). No SQL of its own."""

import datetime
import django_pgjobs.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pgjobs', '0006_schedule_policies'),
    ]

    operations = [
        migrations.CreateModel(
            name='RateWindow',
            fields=[
                ('scope', models.CharField(help_text='queue:<name> or connector:<name>.', max_length=400, primary_key=True, serialize=False)),
                ('starts', django_pgjobs.models.TimesField(blank=True, default=list)),
                ('expires_at', models.DateTimeField(help_text='When its newest start leaves the window: the row can go then.')),
            ],
            options={
                'ordering': ['scope'],
            },
        ),
        migrations.AddField(
            model_name='connector',
            name='rate_limit',
            field=models.PositiveIntegerField(blank=True, help_text='Most jobs using this connector started per rate period, across all workers, in any window of that length; 1 to 10,000; empty = no limit.', null=True),
        ),
        migrations.AddField(
            model_name='connector',
            name='rate_period',
            field=models.FloatField(blank=True, default=1.0, help_text='Seconds: the window of the rate limit.'),
        ),
        migrations.AddField(
            model_name='queue',
            name='rate_limit',
            field=models.PositiveIntegerField(blank=True, help_text='Most jobs of this queue started per rate period, across all workers, in any window of that length; 1 to 10,000; empty = no limit.', null=True),
        ),
        migrations.AddField(
            model_name='queue',
            name='rate_period',
            field=models.FloatField(blank=True, default=1.0, help_text='Seconds: the window of the rate limit.'),
        ),
        migrations.AddConstraint(
            model_name='connector',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('rate_limit__isnull', True), models.Q(('rate_limit__gte', 1), ('rate_limit__lte', 10000)), _connector='OR'), ('rate_period__gt', 0), ('rate_period__lte', 31536000.0)), name='pgjobs_connector_rate_limit_valid'),
        ),
        migrations.AddConstraint(
            model_name='queue',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('rate_limit__isnull', True), models.Q(('rate_limit__gte', 1), ('rate_limit__lte', 10000)), _connector='OR'), ('rate_period__gt', 0), ('rate_period__lte', 31536000.0)), name='pgjobs_queue_rate_limit_valid'),
        ),
        migrations.AddConstraint(
            model_name='ratewindow',
            constraint=models.CheckConstraint(condition=models.Q(('expires_at__gte', datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)), ('expires_at__lt', datetime.datetime(9999, 12, 31, 0, 0, tzinfo=datetime.timezone.utc))), name='pgjobs_ratewindow_times_in_range'),
        ),
    ]
