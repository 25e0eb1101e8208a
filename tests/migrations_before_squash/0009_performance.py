"""Performance: job-table triggers run once per statement, and the table has room to churn.

The state check, the events channel and dependency release were row triggers:
one PL/pgSQL call (and, for release, one query) per job changed. A worker
claims and finishes jobs a hundred at a time, so they now run once per
statement over its transition tables (``old_rows``/``new_rows``), with the same
effects:

- ``pgjobs_job_transition`` still refuses any change the state machine forbids
  (the whole statement fails with check_violation, naming the first bad job);
- ``pgjobs_job_changed`` still publishes one event per job whose state changed;
- ``pgjobs_job_finished`` still counts finished jobs off their dependents, in
  one UPDATE per statement; two transactions finishing the last two
  dependencies of a job still serialise on its row, so exactly one releases it.

Jobs are updated in place twice or more in their life: a fillfactor of 70
keeps the new row versions on the same page, and autovacuum visits the table
after 2% of it changed instead of 20%, so the claim index stays free of dead
entries under churn.

Events of a worker's claims and outcomes are no longer sent from inside those
transactions: every transaction that NOTIFYs takes one cluster-wide lock and
holds it through its commit's fsync, so notifying claims and outcomes
serialise with each other (and with every other notifying transaction on the
server) instead of sharing WAL flushes. Those statements mark themselves (see
``pgjobs_publish_changes``) and the worker publishes their events right after
they commit, in a short transaction of its own that doesn't wait for the disk.

With ``PGJOBS["EVENTS"] = False`` the app's sessions set ``pgjobs.events`` to
``off`` and the event triggers (inserts too) publish nothing.

Statement triggers can't name columns (``UPDATE OF state``), so they see every
UPDATE of the table; each one starts with a join of the transition tables on
``id`` that finds nothing when no state changed.
"""

from importlib import import_module

from django.db import migrations

_triggers = import_module("tests.migrations_before_squash.0002_triggers")

PAIRS = "ARRAY[" + ", ".join(f"'{pair}'" for pair in _triggers.ALLOWED_PAIRS) + "]"

FORWARD = """
DROP TRIGGER pgjobs_job_transition ON pgjobs_job;
DROP TRIGGER pgjobs_job_changed ON pgjobs_job;
DROP TRIGGER pgjobs_job_finished ON pgjobs_job;

CREATE FUNCTION pgjobs_check_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT o.id, o.state AS from_state, n.state AS to_state INTO bad
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state
      AND NOT (o.state || '>' || n.state = ANY ({pairs}))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgjobs: job % cannot go from % to %', bad.id, bad.from_state, bad.to_state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_job_transition
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_check_transitions();

CREATE FUNCTION pgjobs_publish_changes() RETURNS trigger LANGUAGE plpgsql AS $$
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
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'id', n.id, 'task', n.task, 'queue', n.queue, 'state', n.state,
        'previous', o.state, 'attempt', n.attempt)::text)
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state
    ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_job_changed
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_publish_changes();

CREATE FUNCTION pgjobs_release_dependents_of() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Statement triggers fire even for UPDATEs that changed nothing, including
    -- the one below: without this, releasing would recurse for ever.
    IF NOT EXISTS (
        SELECT 1 FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
        WHERE n.state IN ('completed', 'discarded', 'cancelled')
          AND o.state IS DISTINCT FROM n.state
    ) THEN
        RETURN NULL;
    END IF;
    WITH finished AS (
        SELECT n.id, n.state
        FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
        WHERE n.state IN ('completed', 'discarded', 'cancelled')
          AND o.state IS DISTINCT FROM n.state
    ), edges AS (
        UPDATE pgjobs_jobdependency AS edge SET satisfied = true
        FROM finished
        WHERE edge.depends_on_id = finished.id AND NOT edge.satisfied
        RETURNING edge.job_id, finished.id AS dep_id, finished.state AS dep_state
    ), counted AS (
        SELECT job_id,
               count(*) AS done,
               (array_agg(dep_id ORDER BY dep_id)
                   FILTER (WHERE dep_state <> 'completed'))[1] AS failed_id,
               (array_agg(dep_state ORDER BY dep_id)
                   FILTER (WHERE dep_state <> 'completed'))[1] AS failed_state
        FROM edges
        GROUP BY job_id
    ), cancels AS (
        SELECT child.id, counted.done, counted.failed_id, counted.failed_state,
               counted.failed_id IS NOT NULL
               AND coalesce(child.meta->>'on_dependency_failure', 'cancel') = 'cancel' AS cancel
        FROM pgjobs_job AS child JOIN counted ON counted.job_id = child.id
        WHERE child.state = 'waiting'
    )
    UPDATE pgjobs_job AS child
    SET pending_dependencies = child.pending_dependencies - cancels.done,
        state = CASE
            WHEN cancels.cancel THEN 'cancelled'
            WHEN child.pending_dependencies > cancels.done THEN child.state
            WHEN child.run_at > clock_timestamp() THEN 'scheduled'
            ELSE 'available'
        END,
        finished_at = CASE WHEN cancels.cancel THEN clock_timestamp() ELSE child.finished_at END,
        errors = CASE WHEN cancels.cancel THEN child.errors || jsonb_build_array(
            jsonb_build_object(
                'attempt', child.attempt,
                'at', to_json(clock_timestamp()),
                'error', 'DependencyFailed: job ' || cancels.failed_id
                         || ' ended ' || cancels.failed_state,
                'traceback', ''
            )) ELSE child.errors END
    FROM cancels
    WHERE child.id = cancels.id AND child.state = 'waiting';
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_job_finished
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_release_dependents_of();

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

ALTER TABLE pgjobs_job SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
""".replace("{pairs}", PAIRS)

# Back to the row triggers of 0002 and 0003 (their functions were left in place).
REVERSE = """
CREATE OR REPLACE FUNCTION pgjobs_publish_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'id', id, 'task', task, 'queue', queue, 'state', state,
        'previous', NULL, 'attempt', attempt)::text)
    FROM inserted;
    RETURN NULL;
END
$$;
ALTER TABLE pgjobs_job RESET (
    fillfactor, autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor
);
DROP TRIGGER pgjobs_job_finished ON pgjobs_job;
DROP FUNCTION pgjobs_release_dependents_of();
DROP TRIGGER pgjobs_job_changed ON pgjobs_job;
DROP FUNCTION pgjobs_publish_changes();
DROP TRIGGER pgjobs_job_transition ON pgjobs_job;
DROP FUNCTION pgjobs_check_transitions();

CREATE TRIGGER pgjobs_job_transition
    BEFORE UPDATE OF state ON pgjobs_job
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION pgjobs_check_transition();

CREATE TRIGGER pgjobs_job_finished
    AFTER UPDATE OF state ON pgjobs_job
    FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'discarded', 'cancelled')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION pgjobs_release_dependents();

CREATE TRIGGER pgjobs_job_changed
    AFTER UPDATE OF state ON pgjobs_job
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION pgjobs_publish_change();
"""


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0005_worker_process_plural")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
