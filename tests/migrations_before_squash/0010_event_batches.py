"""Events go out many per notification: one payload names every job that made one transition.

A job's life is three or more events (inserted, claimed, finished). One NOTIFY
per event made a batch of 10,000 jobs cost 10,000 notifications at insert and
20,000 more to run: each one built as JSON, hashed for de-duplication, queued
at commit and parsed by every listener (the insert trigger alone was 40% of a
10,000-job ``enqueue_many``). Jobs of one statement that share a task, queue,
state, previous state and attempt now share a payload::

    {"ids": [41, 42, 43], "task": "app.tasks.send", "queue": "default",
     "state": "available", "previous": null, "attempt": 0}

with at most 300 ids, so that a payload stays under PostgreSQL's 8,000 bytes
(ids of 19 digits, a task name of 255 four-byte characters). A statement
changes a job at most once, so grouping keeps each job's events in order.

``pgjobs_publish_events`` sends them for the triggers; a worker's own
publishing (``events.Publisher``) builds the same payloads in Python.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION pgjobs_publish_events(
    ids bigint[], tasks text[], queues text[], states text[], previous text[], attempts integer[]
) RETURNS integer LANGUAGE sql VOLATILE AS $$
    SELECT count(pg_notify('pgjobs_events', payload))::integer
    FROM (
        SELECT json_build_object(
            'ids', grouped.ids[first:first + 299], 'task', grouped.task, 'queue', grouped.queue,
            'state', grouped.state, 'previous', grouped.previous, 'attempt', grouped.attempt
        )::text AS payload
        FROM (
            SELECT e.task, e.queue, e.state, e.previous, e.attempt,
                   array_agg(e.id ORDER BY e.id) AS ids, min(e.id) AS first_id
            FROM unnest($1, $2, $3, $4, $5, $6) AS e (id, task, queue, state, previous, attempt)
            GROUP BY e.task, e.queue, e.state, e.previous, e.attempt
        ) AS grouped,
        generate_series(1, cardinality(grouped.ids), 300) AS first
        ORDER BY grouped.first_id, first
    ) AS payloads
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
    PERFORM pgjobs_publish_events(
        array_agg(n.id), array_agg(n.task::text), array_agg(n.queue::text),
        array_agg(n.state::text), array_agg(o.state::text), array_agg(n.attempt)
    )
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
    PERFORM pgjobs_publish_events(
        array_agg(id), array_agg(task::text), array_agg(queue::text),
        array_agg(state::text), array_agg(NULL::text), array_agg(attempt)
    )
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

DROP FUNCTION pgjobs_publish_events(bigint[], text[], text[], text[], text[], integer[]);
"""


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0009_performance")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
