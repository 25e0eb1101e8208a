-- Load many new jobs at once (enqueue.py, batches of COPY_AT_LEAST jobs or more).
-- COPY parses rows as they stream in, with no JSON document to take apart and
-- no RETURNING: the ids were taken beforehand (next_job_ids.sql). It fires the
-- same statement triggers as an INSERT. The column list is every column:
-- tests/test_performance.py checks it against the model.
COPY pgjobs_job (
    id, task, queue, args, kwargs, state, priority, attempt, max_attempts, timeout,
    run_at, created_at, attempted_at, finished_at, errors, result, unique_key,
    connector, worker_id, lease, pending_dependencies, meta
) FROM STDIN
