-- A dependency's finish counts it off its dependents no lower than zero (migration
-- 0026).
--
-- pending_dependencies is the number of a waiting job's dependencies not finished
-- yet, counted down by this loop as each finishes. A row written with fewer than its
-- unsatisfied edges (by SQL, a restore of part of a dump) went below zero, which the
-- job table's CHECK refused: the dependency's outcome could not be written, drain
-- raised IntegrityError, a worker left the dependency executing until a rescue ran
-- it again, and the admin's cancel of it answered 500, until the prune routine
-- cancelled the miscounted job (sql/cancel_stranded.sql). Now the count stops at
-- zero, which releases the job as any count reaching zero does. Counting its
-- unsatisfied edges instead would read all of a job's edges each time one of its
-- dependencies finished: quadratic for a job waiting on many. Only that line differs
-- from 0025.

CREATE OR REPLACE FUNCTION pgjobs_job_transitioned() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
DECLARE
    ids bigint[];
    old_ids bigint[];
    states text[];
    previous text[];
    tasks text[];
    queues text[];
    attempts integer[];
    sorted boolean := false;
    bad record;
    finished_ids bigint[];
    finished_states text[];
    outer_cascade text;
BEGIN
    -- Old and new rows come in the same order; sorting them is the fallback.
    SELECT n.ids, n.states, o.ids, o.states INTO ids, states, old_ids, previous
    FROM (SELECT array_agg(id) AS ids, array_agg(state) AS states FROM new_rows) AS n,
         (SELECT array_agg(id) AS ids, array_agg(state) AS states FROM old_rows) AS o;
    IF ids IS NULL THEN  -- an UPDATE that matched nothing
        RETURN NULL;
    END IF;
    IF old_ids IS DISTINCT FROM ids THEN
        sorted := true;
        SELECT array_agg(id ORDER BY id), array_agg(state ORDER BY id) INTO ids, states
        FROM new_rows;
        SELECT array_agg(id ORDER BY id), array_agg(state ORDER BY id) INTO old_ids, previous
        FROM old_rows;
        IF old_ids IS DISTINCT FROM ids THEN
            RAISE EXCEPTION 'pgjobs: job ids cannot change' USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF states = previous THEN  -- no job changed state
        RETURN NULL;
    END IF;

    -- The state machine: the first forbidden move fails the whole statement. One
    -- target state reached from states allowed to reach it needs no look at each job.
    IF NOT (states <@ ARRAY[states[1]] AND previous <@ (
        CASE states[1]  -- the target, and the states allowed to move to it
            WHEN 'available' THEN ARRAY['available', 'cancelled', 'completed', 'discarded',
                                        'executing', 'retryable', 'scheduled', 'waiting']
            WHEN 'cancelled' THEN ARRAY['available', 'cancelled', 'executing', 'retryable',
                                        'scheduled', 'waiting']
            WHEN 'completed' THEN ARRAY['completed', 'executing']
            WHEN 'discarded' THEN ARRAY['discarded', 'executing', 'retryable']
            WHEN 'executing' THEN ARRAY['available', 'executing', 'retryable', 'scheduled']
            WHEN 'retryable' THEN ARRAY['executing', 'retryable']
            WHEN 'scheduled' THEN ARRAY['available', 'executing', 'scheduled', 'waiting']
            ELSE ARRAY[]::text[]
        END
    )) THEN
        SELECT c.id, c.from_state, c.to_state INTO bad
        FROM unnest(ids, previous, states) AS c (id, from_state, to_state)
        WHERE c.to_state IS DISTINCT FROM c.from_state
          AND NOT (c.from_state || '>' || c.to_state = ANY (ARRAY[
              'available>cancelled', 'available>executing', 'available>scheduled',
              'cancelled>available',
              'completed>available',
              'discarded>available',
              'executing>available', 'executing>cancelled', 'executing>completed',
              'executing>discarded', 'executing>retryable', 'executing>scheduled',
              'retryable>available', 'retryable>cancelled', 'retryable>discarded',
              'retryable>executing',
              'scheduled>available', 'scheduled>cancelled', 'scheduled>executing',
              'waiting>available', 'waiting>cancelled', 'waiting>scheduled'
          ]))
        ORDER BY c.id
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'pgjobs: job % cannot go from % to %',
                bad.id, bad.from_state, bad.to_state
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    -- Events. A statement that publishes its own after it commits (a worker's
    -- claims and outcomes) says so by setting pgjobs.publisher to its start time;
    -- changes it causes through this trigger (released dependents) are still
    -- published here. PGJOBS["EVENTS"] = False sets pgjobs.events to off.
    IF NOT (pg_trigger_depth() = 1
            AND current_setting('pgjobs.publisher', true) IS NOT DISTINCT FROM
                statement_timestamp()::text)
       AND current_setting('pgjobs.events', true) IS DISTINCT FROM 'off' THEN
        IF sorted THEN
            SELECT array_agg(task ORDER BY id), array_agg(queue ORDER BY id),
                   array_agg(attempt ORDER BY id)
            INTO tasks, queues, attempts FROM new_rows;
        ELSE
            SELECT array_agg(task), array_agg(queue), array_agg(attempt)
            INTO tasks, queues, attempts FROM new_rows;
        END IF;
        PERFORM pgjobs_publish_events(
            array_agg(c.id), array_agg(c.task), array_agg(c.queue),
            array_agg(c.state), array_agg(c.previous), array_agg(c.attempt)
        )
        FROM unnest(ids, tasks, queues, states, previous, attempts)
            AS c (id, task, queue, state, previous, attempt)
        WHERE c.state IS DISTINCT FROM c.previous
        HAVING count(*) > 0;
    END IF;

    -- Dependencies: finished jobs are counted off their dependents, and those they
    -- cancel are counted off theirs in turn, level after level, in the loop below:
    -- each level is an UPDATE that fires this trigger again, which checks it and
    -- publishes its events but leaves its dependents to the loop (pgjobs.cascade
    -- names the trigger depth the loop's UPDATEs fire at). A statement that finished
    -- nothing (a claim; a release that released nothing) stops here; so does one
    -- while no dependency anywhere waits (one probe of pgjobs_dependency_unsatisfied).
    IF NOT ('completed' = ANY (states) OR 'discarded' = ANY (states)
            OR 'cancelled' = ANY (states)) THEN
        RETURN NULL;
    END IF;
    IF current_setting('pgjobs.cascade', true) = pg_trigger_depth()::text THEN
        RETURN NULL;  -- one of the loop's UPDATEs: the loop goes on from its jobs
    END IF;
    IF NOT EXISTS (SELECT FROM pgjobs_jobdependency WHERE NOT satisfied) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(c.id), array_agg(c.state) INTO finished_ids, finished_states
    FROM unnest(ids, previous, states) AS c (id, previous, state)
    WHERE c.state IN ('completed', 'discarded', 'cancelled')
      AND c.previous IS DISTINCT FROM c.state;
    outer_cascade := current_setting('pgjobs.cascade', true);
    PERFORM set_config('pgjobs.cascade', (pg_trigger_depth() + 1)::text, true);
    -- Each turn cancels only waiting jobs, so the loop ends, whatever the edges.
    WHILE finished_ids IS NOT NULL LOOP
        WITH finished AS (
            SELECT f.id, f.state FROM unnest(finished_ids, finished_states) AS f (id, state)
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
        ), cancels AS MATERIALIZED (
            -- Each dependent found by its id; "waiting" checked in a way no index
            -- matches (state is NOT NULL: the same as = 'waiting'): migration 0025.
            SELECT child.id, counted.done, counted.failed_id, counted.failed_state,
                   counted.failed_id IS NOT NULL
                   AND coalesce(child.meta->>'on_dependency_failure', 'cancel') = 'cancel' AS cancel
            FROM pgjobs_job AS child JOIN counted ON counted.job_id = child.id
            WHERE (child.state = 'waiting') IS TRUE
        ), changed AS (
            UPDATE pgjobs_job AS child
            SET pending_dependencies = greatest(child.pending_dependencies - cancels.done, 0),
                state = CASE
                    WHEN cancels.cancel THEN 'cancelled'
                    WHEN child.pending_dependencies > cancels.done THEN child.state
                    WHEN child.run_at > clock_timestamp() THEN 'scheduled'
                    ELSE 'available'
                END,
                finished_at = CASE WHEN cancels.cancel THEN clock_timestamp()
                                   ELSE child.finished_at END,
                errors = CASE WHEN cancels.cancel THEN child.errors || jsonb_build_array(
                    jsonb_build_object(
                        'attempt', child.attempt,
                        'at', to_json(clock_timestamp()),
                        'error', 'DependencyFailed: job ' || cancels.failed_id
                                 || ' ended ' || cancels.failed_state,
                        'traceback', ''
                    )) ELSE child.errors END
            FROM cancels
            WHERE child.id = cancels.id AND (child.state = 'waiting') IS TRUE
            RETURNING child.id, child.state
        )
        SELECT array_agg(changed.id), array_agg(changed.state)
        INTO finished_ids, finished_states
        FROM changed
        WHERE changed.state = 'cancelled';
    END LOOP;
    PERFORM set_config('pgjobs.cascade', coalesce(outer_cascade, ''), true);
    RETURN NULL;
END
$$;
