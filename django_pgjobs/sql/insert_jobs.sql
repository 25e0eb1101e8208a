-- Insert many jobs in one statement. %(rows)s is a JSON array with one object
-- per job, keyed by column name; jsonb_populate_recordset reads them in one
-- pass (a third faster than a record per element). Ids come from the table's
-- sequence in array order; the caller sorts RETURNING. The column list is every
-- column but id: tests/test_performance.py checks it against the model, so a
-- new field fails there until it is added here too.
INSERT INTO pgjobs_job (
    task, queue, args, kwargs, state, priority, attempt, max_attempts, timeout,
    run_at, created_at, attempted_at, finished_at, errors, result, unique_key,
    connector, worker_id, lease, pending_dependencies, meta
)
SELECT
    task, queue, args, kwargs, state, priority, attempt, max_attempts, timeout,
    run_at, created_at, attempted_at, finished_at, errors, result, unique_key,
    connector, worker_id, lease, pending_dependencies, meta
FROM jsonb_populate_recordset(NULL::pgjobs_job, %(rows)s::jsonb)
RETURNING id
