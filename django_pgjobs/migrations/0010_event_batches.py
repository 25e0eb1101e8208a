"""Events go out many per notification: each payload on ``pgjobs_events`` is a JSON array.

A job's life is three or more events (inserted, claimed, finished). One NOTIFY
per event made a batch of 10,000 jobs cost 30,000 notifications: each one is
hashed for de-duplication at the statement that sends it, written to the
notification queue at commit, and read and parsed by every listener. Packing
the events of one statement into arrays of about 6 kB (PostgreSQL refuses
payloads of 8,000 bytes or more; one event is at most about 1 kB) cuts that
by a factor of 50 or so.

``pgjobs_publish_events(jsonb)`` is the one place that splits and sends: the
triggers and the worker's own publishing (``sql/publish.sql``) both call it.
Events keep their order, within a payload and from one payload to the next.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION pgjobs_publish_events(events jsonb) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    SELECT count(pg_notify('pgjobs_events', payload))::integer
    FROM (
        SELECT jsonb_agg(event ORDER BY position)::text AS payload
        FROM (
            SELECT event, position,
                   sum(octet_length(event::text) + 2) OVER (ORDER BY position) / 6000 AS chunk
            FROM jsonb_array_elements(events) WITH ORDINALITY AS listed (event, position)
        ) AS sized
        GROUP BY chunk
        ORDER BY chunk
    ) AS chunks
$$;

CREATE OR REPLACE FUNCTION pgjobs_publish_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A statement that publishes its own events after it commits (a worker's
    -- claims and outcomes) says so by setting pgjobs.publisher to its start
    -- time; changes it causes through other triggers (released dependents)
    -- are still published here.
    IF pg_trigger_depth() = 1
       AND current_setting('pgjobs.publisher', true) = statement_timestamp()::text THEN
        RETURN NULL;
    END IF;
    -- PGJOBS["EVENTS"] = False: the app's sessions say so (events.switch_off_in_database).
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    PERFORM pgjobs_publish_events(jsonb_agg(jsonb_build_object(
        'id', n.id, 'task', n.task, 'queue', n.queue, 'state', n.state,
        'previous', o.state, 'attempt', n.attempt) ORDER BY n.id))
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgjobs_publish_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    PERFORM pgjobs_publish_events(jsonb_agg(jsonb_build_object(
        'id', id, 'task', task, 'queue', queue, 'state', state,
        'previous', NULL, 'attempt', attempt) ORDER BY id))
    FROM inserted
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;
"""

# The one-event-per-notification functions of 0009_performance.
REVERSE = """
CREATE OR REPLACE FUNCTION pgjobs_publish_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() = 1
       AND current_setting('pgjobs.publisher', true) = statement_timestamp()::text THEN
        RETURN NULL;
    END IF;
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'id', n.id, 'task', n.task, 'queue', n.queue, 'state', n.state,
        'previous', o.state, 'attempt', n.attempt)::text)
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state
    ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgjobs_publish_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'id', id, 'task', task, 'queue', queue, 'state', state,
        'previous', NULL, 'attempt', attempt)::text)
    FROM inserted;
    RETURN NULL;
END
$$;

DROP FUNCTION pgjobs_publish_events(jsonb);
"""


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0009_performance")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
