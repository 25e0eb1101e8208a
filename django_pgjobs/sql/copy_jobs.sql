-- Load many new jobs at once (enqueue.py, batches of COPY_AT_LEAST jobs or more),
-- in the binary format copying.py writes. COPY stores rows as they stream in,
-- with no JSON document to take apart and no RETURNING: the ids were taken
-- beforehand (next_job_ids.sql). It fires the same statement triggers as an INSERT. Every column is listed (tests check it
-- against the model): first those copying.OWN_COLUMNS encodes for each job,
-- then those it encodes once for each distinct set of values (unique_key among
-- them: jobs with a key are inserted one by one).
COPY pgjobs_job (
    id, args, kwargs, meta, errors, result,
    unique_key, task, queue, state, priority, attempt, max_attempts, timeout, run_at, created_at,
    attempted_at, finished_at, connector, worker_id, lease, pending_dependencies
) FROM STDIN WITH (FORMAT binary)
