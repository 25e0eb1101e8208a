-- pgjobs_insert_job announces the job it inserts itself (migration 0022).
--
-- Job.enqueue's one-row INSERT, made in pgjobs_insert_job, fired pgjobs_job_inserted,
-- whose statement trigger collected the row into a transition table and ran
-- pgjobs_announce_inserted: a count(*) and a SELECT over that table, then the two
-- notifications. The function knows the row already (its arguments and the id the
-- INSERT returns), so it sends the same two notifications with the same payloads
-- itself, and the trigger skips the INSERTs it marks: 22-28 us less of server CPU per
-- enqueue (157-177 us -> 129-154 us, one client, the 2-core box of bench/README.md).
--
-- The mark is pgjobs.announced = 'by insert', local to the transaction, set just
-- before the INSERT and cleared just after it; an INSERT that fails takes the
-- transaction or the caller's savepoint down, and the mark with it. A trigger's own
-- INSERT into pgjobs_job made while the function's INSERT runs (pg_trigger_depth()
-- above 0) is announced by the trigger as before; had the function been called from a
-- trigger, both would notify, and PostgreSQL sends a transaction's identical
-- notifications once. Any other INSERT (a batch, a COPY, one written in SQL) is
-- announced by the trigger, unchanged.

CREATE OR REPLACE FUNCTION pgjobs_insert_job(
    task text, queue text, args jsonb, kwargs jsonb, state text, priority integer,
    max_attempts integer, timeout double precision, run_at timestamptz,
    created_at timestamptz, unique_key text, connector text,
    pending_dependencies integer, meta jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM set_config('pgjobs.announced', 'by insert', true);
    INSERT INTO pgjobs_job AS job (
        task, queue, args, kwargs, state, priority, attempt, max_attempts, timeout,
        run_at, created_at, attempted_at, finished_at, errors, result, unique_key,
        connector, worker_id, lease, pending_dependencies, meta
    )
    VALUES (
        pgjobs_insert_job.task, pgjobs_insert_job.queue, pgjobs_insert_job.args,
        pgjobs_insert_job.kwargs, pgjobs_insert_job.state, pgjobs_insert_job.priority, 0,
        pgjobs_insert_job.max_attempts, pgjobs_insert_job.timeout, pgjobs_insert_job.run_at,
        pgjobs_insert_job.created_at, NULL, NULL, '[]', NULL, pgjobs_insert_job.unique_key,
        pgjobs_insert_job.connector, NULL, NULL, pgjobs_insert_job.pending_dependencies,
        pgjobs_insert_job.meta
    )
    RETURNING job.id INTO new_id;
    PERFORM set_config('pgjobs.announced', '', true);
    -- What pgjobs_announce_inserted sends for one row, byte for byte.
    IF pgjobs_insert_job.state = 'available' THEN
        PERFORM pg_notify('pgjobs_jobs', pgjobs_insert_job.queue);
    END IF;
    IF current_setting('pgjobs.events', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_notify('pgjobs_events', json_build_object(
            'ids', ARRAY[new_id], 'task', pgjobs_insert_job.task,
            'queue', pgjobs_insert_job.queue, 'state', pgjobs_insert_job.state,
            'previous', NULL, 'attempt', 0
        )::text);
    END IF;
    RETURN new_id;
END
$$;

DROP TRIGGER pgjobs_job_inserted ON pgjobs_job;
CREATE TRIGGER pgjobs_job_inserted
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    WHEN (
        pg_trigger_depth() > 0
        OR current_setting('pgjobs.announced', true) IS DISTINCT FROM 'by insert'
    )
    EXECUTE FUNCTION pgjobs_announce_inserted();
