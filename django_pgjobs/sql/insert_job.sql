-- Insert one job: the path of every Job.enqueue / task.enqueue. One row of
-- literal values costs the server ~70 us less than insert_jobs.sql's JSON array,
-- whose jsonb_populate_recordset looks up every column's type and input function
-- anew in each statement. The column list is every column but id (checked
-- against the model by tests/test_performance.py).
INSERT INTO pgjobs_job (
    task, queue, args, kwargs, state, priority, attempt, max_attempts, timeout,
    run_at, created_at, attempted_at, finished_at, errors, result, unique_key,
    connector, worker_id, lease, pending_dependencies, meta
)
VALUES (
    %(task)s, %(queue)s, %(args)s, %(kwargs)s, %(state)s, %(priority)s, %(attempt)s,
    %(max_attempts)s, %(timeout)s, %(run_at)s, %(created_at)s, %(attempted_at)s,
    %(finished_at)s, %(errors)s, %(result)s, %(unique_key)s, %(connector)s,
    %(worker_id)s, %(lease)s, %(pending_dependencies)s, %(meta)s
)
RETURNING id
