-- The triggers of pgjobs' tables and the functions they run (migration 0002).
--
-- What the database does by itself, whoever writes (worker, admin, ORM, psql):
--
--   pgjobs_job_inserted        wakes workers of the queues that got available jobs
--   pgjobs_job_made_available  wakes them when a job becomes available by an UPDATE
--   pgjobs_queue_changed       wakes them when a queue is unpaused, unblocked or its limit raised
--   pgjobs_job_published       publishes the events of new jobs
--   pgjobs_job_transition      enforces the state machine, publishes the events of state
--                              changes, and releases (or cancels) the dependents of finished jobs
--   pgjobs_schedule_replan     makes schedulers plan an edited schedule afresh
--   pgjobs_schedule_changed    tells running schedulers a schedule changed
--
-- Since migration 0014, pgjobs_job_inserted alone does the work of the two insert
-- triggers (pgjobs_job_published is gone), with a short path for an INSERT of one
-- row: see sql/0014_one_insert_trigger.sql.
--
-- Wake-ups go out on the channel pgjobs_jobs with the queue name as payload: PostgreSQL
-- folds identical notifications of one transaction into one, so a transaction
-- inserting 10,000 jobs into one queue wakes workers once. Events go out on
-- pgjobs_events, many jobs per notification (pgjobs_publish_events).
--
-- The job triggers run once per statement, over its transition tables, not once per
-- row: workers claim and finish jobs a hundred at a time. Their functions run with
-- jit = off: they are small queries over rows already in memory, planned with a guess
-- of the transition table's size, and PostgreSQL once spent 240 ms compiling one that
-- runs in 10.
--
-- A later migration that changes a function here replaces it whole, in a file of its
-- own: see README.md in this directory.


-- Waking workers -------------------------------------------------------------------

CREATE FUNCTION pgjobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
BEGIN
    PERFORM pg_notify('pgjobs_jobs', q.queue)
    FROM (SELECT DISTINCT queue COLLATE "C" AS queue FROM inserted WHERE state = 'available') AS q;
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


-- Events ---------------------------------------------------------------------------
--
-- Jobs of one statement that share a task, queue, state, previous state and attempt
-- share a payload:
--
--   {"ids": [41, 42, 43], "task": "app.tasks.send", "queue": "default",
--    "state": "available", "previous": null, "attempt": 0}
--
-- with at most 300 ids, so that a payload stays under PostgreSQL's 8,000 bytes (ids
-- of 19 digits, a task name of 255 four-byte characters). A statement changes a job
-- at most once, so grouping keeps each job's events in order. A worker's own
-- publisher (events.Publisher) builds the same payloads in Python.
--
-- With PGJOBS["EVENTS"] = False the app's sessions set pgjobs.events to off, and the
-- triggers publish nothing.

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

-- New jobs are grouped straight from the transition table, comparing names bytewise
-- (COLLATE "C": equal names are equal bytes, and it is several times cheaper per row).
CREATE FUNCTION pgjobs_publish_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
BEGIN
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    -- The payloads of pgjobs_publish_events, at most 300 ids each.
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'ids', batch.ids[first:first + 299], 'task', batch.task, 'queue', batch.queue,
        'state', batch.state, 'previous', NULL, 'attempt', batch.attempt
    )::text)
    FROM (
        SELECT task COLLATE "C" AS task, queue COLLATE "C" AS queue,
               state COLLATE "C" AS state, attempt,
               array_agg(id ORDER BY id) AS ids, min(id) AS first_id
        FROM inserted
        GROUP BY 1, 2, 3, 4
    ) AS batch,
    generate_series(1, cardinality(batch.ids), 300) AS first
    ORDER BY batch.first_id, first;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_job_published
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_publish_inserted();


-- Job updates: the state machine, their events, dependency release ------------------
--
-- One function, once per UPDATE statement, in time linear in the rows it changed:
--
-- - It reads each transition table once into arrays and never joins them (PL/pgSQL
--   keeps the plan of its first call, made knowing nothing of the tables' sizes: a
--   join was a nested loop, every new row compared with every old one). PostgreSQL
--   records an updated row's old and new versions together, so old_rows and new_rows
--   list the jobs in the same order; the ids are compared one for one to be sure,
--   and sorting both by id is the fallback (a changed id fails the statement).
-- - A statement that changed no state (a new priority or run_at, dependents counted
--   down that still wait) stops there.
-- - The state machine (django_pgjobs/states.py, ALLOWED; tests/test_state_machine.py
--   checks this function agrees with it) is checked on the whole statement first:
--   when every changed job went to one state from states allowed to reach it (a
--   claim: to executing; a batch of outcomes: to completed; an operator's bulk
--   action), two array comparisons prove it. Other statements are checked job by
--   job, and the lowest forbidden job is named. Any forbidden move fails the whole
--   statement with check_violation.
-- - Events: a statement that publishes its own right after it commits (a worker's
--   claims and outcomes, which must not NOTIFY: every notifying transaction holds one
--   cluster-wide lock through its commit's fsync) says so by setting pgjobs.publisher
--   to its start time. A session that never set it reads NULL, hence IS NOT DISTINCT
--   FROM. Changes it causes through this trigger (released dependents) are still
--   published here.
-- - Dependencies: finished jobs are counted off their dependents in one UPDATE; two
--   transactions finishing a job's last two dependencies serialise on its row, so
--   exactly one releases it. A statement that finished nothing stops before looking,
--   and so does one while no dependency anywhere waits (one probe of the partial
--   index pgjobs_dependency_unsatisfied).

CREATE FUNCTION pgjobs_job_transitioned() RETURNS trigger LANGUAGE plpgsql
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
            WHEN 'scheduled' THEN ARRAY['available', 'scheduled', 'waiting']
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
              'executing>discarded', 'executing>retryable',
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

    -- Dependencies: finished jobs are counted off their dependents, whose release
    -- (or cancellation) is an UPDATE that fires this trigger again, one level down.
    -- A statement that finished nothing (a claim; the release's own UPDATE when it
    -- released nothing) stops here, which also ends that recursion; so does one
    -- while no dependency anywhere waits (one probe of pgjobs_dependency_unsatisfied).
    IF NOT ('completed' = ANY (states) OR 'discarded' = ANY (states)
            OR 'cancelled' = ANY (states)) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT FROM pgjobs_jobdependency WHERE NOT satisfied) THEN
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

-- A statement trigger can't name columns (UPDATE OF state): it sees every UPDATE of
-- the table, and returns at once from those that changed no state.
CREATE TRIGGER pgjobs_job_transition
    AFTER UPDATE ON pgjobs_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_job_transitioned();


-- Schedules ------------------------------------------------------------------------
--
-- Schedules are live-editable from anywhere (admin, ORM, psql). A changed cron or
-- timezone, or a re-enabled schedule, clears next_fire_at (unless the same statement
-- sets it), so schedulers plan from the first tick after the edit instead of one
-- computed from the old rule. An insert, delete or edit notifies pgjobs_schedules
-- with the schedule's id on commit, so running schedulers re-read it at once; a
-- scheduler recording a tick (only last/next_fire_at and updated_at change) wakes
-- nobody.

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
          OR to_jsonb(OLD) - '{last_fire_at,next_fire_at,updated_at}'::text[]
             IS DISTINCT FROM to_jsonb(NEW) - '{last_fire_at,next_fire_at,updated_at}'::text[] THEN
        PERFORM pg_notify('pgjobs_schedules', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_schedule_changed
    AFTER INSERT OR UPDATE OR DELETE ON pgjobs_schedule
    FOR EACH ROW EXECUTE FUNCTION pgjobs_notify_schedule_changed();
