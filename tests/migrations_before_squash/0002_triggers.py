"""Triggers: wake workers on commit, and enforce the job state machine in the database.

The notification payload is the queue name only. PostgreSQL folds identical
notifications of one transaction into one, so a transaction inserting 10,000
jobs into one queue wakes workers once.
"""

from django.db import migrations

# Generated from django_pgjobs.states.ALLOWED; tests/test_state_machine.py checks
# the database agrees with it. Change both together, in a new migration.
ALLOWED_PAIRS = [
    "available>cancelled", "available>executing", "available>scheduled",
    "cancelled>available", "completed>available", "discarded>available",
    "executing>available", "executing>cancelled", "executing>completed",
    "executing>discarded", "executing>retryable",
    "retryable>available", "retryable>cancelled", "retryable>discarded", "retryable>executing",
    "scheduled>available", "scheduled>cancelled", "scheduled>executing",
    "waiting>available", "waiting>cancelled", "waiting>scheduled",
]

FORWARD = """
CREATE FUNCTION pgjobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgjobs_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_job_inserted
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_notify_inserted();

CREATE FUNCTION pgjobs_notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgjobs_jobs', NEW.queue);
    RETURN NULL;
END
$$;

-- Retried, handed back or released jobs become runnable without an INSERT.
CREATE TRIGGER pgjobs_job_made_available
    AFTER UPDATE OF state ON pgjobs_job
    FOR EACH ROW
    WHEN (NEW.state = 'available' AND OLD.state IS DISTINCT FROM 'available')
    EXECUTE FUNCTION pgjobs_notify_queue();

CREATE FUNCTION pgjobs_notify_queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgjobs_jobs', NEW.name);
    RETURN NULL;
END
$$;

-- Unpausing, raising a limit or unblocking must wake idle workers at once.
CREATE TRIGGER pgjobs_queue_changed
    AFTER INSERT OR UPDATE ON pgjobs_queue
    FOR EACH ROW EXECUTE FUNCTION pgjobs_notify_queue_changed();

CREATE FUNCTION pgjobs_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (OLD.state || '>' || NEW.state = ANY ({pairs})) THEN
        RAISE EXCEPTION 'pgjobs: job % cannot go from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER pgjobs_job_transition
    BEFORE UPDATE OF state ON pgjobs_job
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION pgjobs_check_transition();
""".replace("{pairs}", "ARRAY[" + ", ".join(f"'{pair}'" for pair in ALLOWED_PAIRS) + "]")

REVERSE = """
DROP TRIGGER IF EXISTS pgjobs_job_transition ON pgjobs_job;
DROP FUNCTION IF EXISTS pgjobs_check_transition();
DROP TRIGGER IF EXISTS pgjobs_queue_changed ON pgjobs_queue;
DROP FUNCTION IF EXISTS pgjobs_notify_queue_changed();
DROP TRIGGER IF EXISTS pgjobs_job_made_available ON pgjobs_job;
DROP FUNCTION IF EXISTS pgjobs_notify_queue();
DROP TRIGGER IF EXISTS pgjobs_job_inserted ON pgjobs_job;
DROP FUNCTION IF EXISTS pgjobs_notify_inserted();
"""


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
