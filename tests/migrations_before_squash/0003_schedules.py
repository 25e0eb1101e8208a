"""Cron schedules, the record of fired ticks, and maintenance routines.

Two triggers on pgjobs_schedule make schedules live-editable from anywhere
(admin, ORM, psql):

- pgjobs_schedule_replan: a changed cron or timezone, or a re-enabled schedule,
  clears next_fire_at (unless the same statement sets it), so schedulers plan
  from the first tick after the edit instead of one computed from the old rule.
- pgjobs_schedule_changed: NOTIFY pgjobs_schedules with the schedule's id on
  commit of an insert, delete or edit, so running schedulers re-read at once.
  A scheduler recording a tick (only last/next_fire_at change) wakes nobody.
"""

import django.db.models.deletion
import django_pgjobs.models
from django.db import migrations, models


SCHEDULER_COLUMNS = "'{last_fire_at,next_fire_at,updated_at}'::text[]"

FORWARD = """
CREATE FUNCTION pgjobs_schedule_replan() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_fire_at IS NOT DISTINCT FROM OLD.next_fire_at
       AND (NEW.cron IS DISTINCT FROM OLD.cron
            OR NEW.timezone IS DISTINCT FROM OLD.timezone
            OR (NEW.enabled AND NOT OLD.enabled)) THEN
        NEW.next_fire_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER pgjobs_schedule_replan
    BEFORE UPDATE ON pgjobs_schedule
    FOR EACH ROW EXECUTE FUNCTION pgjobs_schedule_replan();

CREATE FUNCTION pgjobs_notify_schedule_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('pgjobs_schedules', OLD.id::text);
    ELSIF TG_OP = 'INSERT'
          OR NEW.next_fire_at IS NULL
          OR to_jsonb(OLD) - {columns} IS DISTINCT FROM to_jsonb(NEW) - {columns} THEN
        PERFORM pg_notify('pgjobs_schedules', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_schedule_changed
    AFTER INSERT OR UPDATE OR DELETE ON pgjobs_schedule
    FOR EACH ROW EXECUTE FUNCTION pgjobs_notify_schedule_changed();
""".replace("{columns}", SCHEDULER_COLUMNS)

REVERSE = """
DROP TRIGGER IF EXISTS pgjobs_schedule_changed ON pgjobs_schedule;
DROP FUNCTION IF EXISTS pgjobs_notify_schedule_changed();
DROP TRIGGER IF EXISTS pgjobs_schedule_replan ON pgjobs_schedule;
DROP FUNCTION IF EXISTS pgjobs_schedule_replan();
"""


class Migration(migrations.Migration):

    dependencies = [
        # After main's 0003 (pipelines) so the history stays linear; see the merge commit.
        ('pgjobs', '0003_pipelines_events'),
    ]

    operations = [
        migrations.CreateModel(
            name='Routine',
            fields=[
                ('name', models.CharField(max_length=63, primary_key=True, serialize=False)),
                ('next_run_at', models.DateTimeField()),
                ('last_run_at', models.DateTimeField(blank=True, null=True)),
                ('last_result', models.CharField(blank=True, max_length=255)),
            ],
            options={
                'verbose_name': 'maintenance routine',
                'ordering': ['name'],
            },
        ),
        migrations.CreateModel(
            name='Schedule',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200, unique=True)),
                ('cron', models.CharField(help_text="minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' or '30 2 * * 1-5'; or @hourly, @daily, @weekly, @monthly, @yearly.", max_length=100, validators=[django_pgjobs.models.validate_cron])),
                ('timezone', models.CharField(default=django_pgjobs.models.default_timezone, help_text="IANA name, e.g. 'Europe/Berlin': the cron fields are read on this clock.", max_length=63, validators=[django_pgjobs.models.validate_timezone])),
                ('task', models.CharField(help_text='Dotted path of a @task function.', max_length=255)),
                ('args', models.JSONField(blank=True, default=list)),
                ('kwargs', models.JSONField(blank=True, default=dict)),
                ('queue', models.CharField(blank=True, help_text="Empty: the task's queue.", max_length=63)),
                ('priority', models.SmallIntegerField(blank=True, help_text="Empty: the task's priority.", null=True)),
                ('enabled', models.BooleanField(default=True)),
                ('misfire', models.CharField(choices=[('catch_up', 'Catch up: fire once for missed ticks'), ('skip', 'Skip missed ticks')], default='catch_up', help_text='What to do with ticks missed while no scheduler ran.', max_length=16)),
                ('last_fire_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('next_fire_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['name'],
                'indexes': [models.Index(condition=models.Q(('enabled', True)), fields=['next_fire_at'], name='pgjobs_schedule_due')],
                'constraints': [models.CheckConstraint(condition=models.Q(('misfire__in', ['catch_up', 'skip'])), name='pgjobs_schedule_misfire_valid')],
            },
        ),
        migrations.CreateModel(
            name='ScheduleTick',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('fire_at', models.DateTimeField(help_text='The tick: when the schedule was due.')),
                ('fired_at', models.DateTimeField(help_text='When a scheduler fired it.')),
                ('error', models.TextField(blank=True, help_text='Why no job was enqueued, if none was.')),
                ('job', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='schedule_ticks', to='pgjobs.job')),
                ('schedule', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='ticks', to='pgjobs.schedule')),
            ],
            options={
                'ordering': ['-fire_at'],
                'indexes': [models.Index(fields=['fired_at'], name='pgjobs_tick_fired_at')],
                'constraints': [models.UniqueConstraint(fields=('schedule', 'fire_at'), name='pgjobs_tick_once')],
            },
        ),
        migrations.RunSQL(FORWARD, REVERSE),
    ]
