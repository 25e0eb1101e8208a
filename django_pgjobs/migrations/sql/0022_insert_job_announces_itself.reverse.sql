-- Before 0022: pgjobs_insert_job (0015) only inserted, and the trigger (0014)
-- announced every INSERT.

CREATE OR REPLACE FUNCTION pgjobs_insert_job(
    task text, queue text, args jsonb, kwargs jsonb, state text, priority integer,
    max_attempts integer, timeout double precision, run_at timestamptz,
    created_at timestamptz, unique_key text, connector text,
    pending_dependencies integer, meta jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
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
    RETURN new_id;
END
$$;

DROP TRIGGER pgjobs_job_inserted ON pgjobs_job;
CREATE TRIGGER pgjobs_job_inserted
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_announce_inserted();
