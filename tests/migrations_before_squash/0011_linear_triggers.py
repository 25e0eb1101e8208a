"""One statement trigger for job updates, linear in the rows of its statement.

0009_performance left three statement triggers on UPDATE (the state-machine
check, the events, the dependency release), each joining the transition tables
``new_rows`` and ``old_rows`` on ``id``. PL/pgSQL keeps the plan of such a join
from the trigger's first call, when PostgreSQL knows nothing about the size of
transition tables, so it was a nested loop: every new row compared with every
old one. A worker writing 500 outcomes spent 26 ms of a 33 ms statement in the
check and 90 ms in the release (the release a worker's claim ran did the same,
finding nothing); an admin retrying 50,000 jobs would have waited for hours.

``pgjobs_job_transitioned`` reads each transition table once, into arrays
sorted by id: an UPDATE's old and new rows are the same jobs, so the arrays line
up without a join. Then, as before: a forbidden move fails the statement; the
events of the changes are published (unless the statement publishes its own,
see 0009); finished jobs are counted off their dependents. The trigger keeps the
name of the state-machine check, ``pgjobs_job_transition``. The three functions
of the old triggers stay in the database, unused, for the reverse migration.
"""

from importlib import import_module

from django.db import migrations

_previous = import_module("tests.migrations_before_squash.0009_performance")

FORWARD = """
DROP TRIGGER pgjobs_job_transition ON pgjobs_job;
DROP TRIGGER pgjobs_job_changed ON pgjobs_job;
DROP TRIGGER pgjobs_job_finished ON pgjobs_job;

CREATE FUNCTION pgjobs_job_transitioned() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    old_ids bigint[];
    states text[];
    previous text[];
    tasks text[];
    queues text[];
    attempts integer[];
    bad record;
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(state ORDER BY id), array_agg(task ORDER BY id),
           array_agg(queue ORDER BY id), array_agg(attempt ORDER BY id)
    INTO ids, states, tasks, queues, attempts
    FROM new_rows;
    IF ids IS NULL THEN  -- an UPDATE that matched nothing
        RETURN NULL;
    END IF;
    SELECT array_agg(id ORDER BY id), array_agg(state ORDER BY id) INTO old_ids, previous
    FROM old_rows;
    IF old_ids IS DISTINCT FROM ids THEN
        RAISE EXCEPTION 'pgjobs: job ids cannot change' USING ERRCODE = 'check_violation';
    END IF;

    -- The state machine: the first forbidden move fails the whole statement.
    SELECT c.id, c.from_state, c.to_state INTO bad
    FROM unnest(ids, previous, states) AS c (id, from_state, to_state)
    WHERE c.to_state IS DISTINCT FROM c.from_state
      AND NOT (c.from_state || '>' || c.to_state = ANY ({pairs}))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgjobs: job % cannot go from % to %', bad.id, bad.from_state, bad.to_state
            USING ERRCODE = 'check_violation';
    END IF;

    -- Events. A statement that publishes its own after it commits (a worker's
    -- claims and outcomes) says so by setting pgjobs.publisher to its start time;
    -- changes it causes through this trigger (released dependents) are still
    -- published here. PGJOBS["EVENTS"] = False sets pgjobs.events to off.
    IF NOT (pg_trigger_depth() = 1
            AND current_setting('pgjobs.publisher', true) = statement_timestamp()::text)
       AND current_setting('pgjobs.events', true) IS DISTINCT FROM 'off' THEN
        PERFORM pgjobs_publish_events(
            array_agg(c.id), array_agg(c.task), array_agg(c.queue),
            array_agg(c.state), array_agg(c.previous), array_agg(c.attempt)
        )
        FROM unnest(ids, tasks, queues, states, previous, attempts)
            AS c (id, task, queue, state, previous, attempt)
        WHERE c.state IS DISTINCT FROM c.previous
        HAVING count(*) > 0;
    END IF;

    -- Dependencies: finished jobs are counted off their dependents, whose release
    -- (or cancellation) is an UPDATE that fires this trigger again, one level down.
    -- A statement that finished nothing (a claim; the release's own UPDATE when it
    -- released nothing) stops here, which also ends that recursion.
    IF NOT ('completed' = ANY (states) OR 'discarded' = ANY (states)
            OR 'cancelled' = ANY (states)) THEN
        RETURN NULL;
    END IF;
    WITH finished AS (
        SELECT c.id, c.state
        FROM unnest(ids, previous, states) AS c (id, previous, state)
        WHERE c.state IN ('completed', 'discarded', 'cancelled')
          AND c.previous IS DISTINCT FROM c.state
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

CREATE TRIGGER pgjobs_job_transition
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_job_transitioned();
""".replace("{pairs}", _previous.PAIRS)

# The three triggers of 0009_performance (their functions were left in place).
REVERSE = """
DROP TRIGGER pgjobs_job_transition ON pgjobs_job;
DROP FUNCTION pgjobs_job_transitioned();

CREATE TRIGGER pgjobs_job_transition
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_check_transitions();

CREATE TRIGGER pgjobs_job_changed
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_publish_changes();

CREATE TRIGGER pgjobs_job_finished
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_release_dependents_of();
"""


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0010_event_batches")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
