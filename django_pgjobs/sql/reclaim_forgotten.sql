-- Take back the jobs a live worker's lease still holds but the worker no longer
-- runs: %(held)s lists what it runs, and a job claimed before %(claimed_before)s
-- that is not among them was forgotten (its outcome dropped). Rescue (rescue.sql)
-- only takes a dead worker's jobs, so without this such a job would stay executing
-- for as long as its worker lives.
--
-- Unlike a lost worker's jobs, the attempt counts: it was not a crash, and a job
-- forgotten again and again must not loop forever. A job with attempts left is
-- available again at its place in the queue; one without is discarded.
-- Clearing the lease refuses whatever the worker would still write.
UPDATE pgjobs_job AS job
SET state = CASE WHEN job.attempt >= job.max_attempts THEN 'discarded' ELSE 'available' END,
    finished_at = CASE WHEN job.attempt >= job.max_attempts THEN %(now)s END,
    lease = NULL,
    worker_id = NULL,
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempt,
        'at', to_json(%(now)s::timestamptz),
        'error', 'WorkerLost: worker ' || job.worker_id
                 || ' no longer held this job; its outcome was never written',
        'traceback', ''
    ))
FROM (
    SELECT id
    FROM pgjobs_job
    WHERE state = 'executing'
      AND worker_id = %(worker_id)s
      AND NOT (id = ANY(%(held)s::bigint[]))
      AND attempted_at < %(claimed_before)s
    FOR UPDATE SKIP LOCKED
) AS forgotten
WHERE job.id = forgotten.id
RETURNING job.id,
    -- include: claimed_json
    job.task, job.queue, job.state, job.priority, job.attempt, job.max_attempts,
    job.timeout, job.run_at, job.created_at, job.attempted_at, job.finished_at,
    job.unique_key, job.connector, job.lease, job.pending_dependencies, job.worker_id
