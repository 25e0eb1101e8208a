-- Claim up to %(limit)s due jobs of one queue that has no concurrency limit.
-- SKIP LOCKED lets any number of workers claim side by side without waiting on
-- each other; the inner query matches the pgjobs_job_claim index.
UPDATE pgjobs_job AS job
SET state = 'executing',
    attempt = job.attempt + 1,
    attempted_at = %(now)s,
    worker_id = %(worker_id)s,
    lease = gen_random_uuid()
FROM (
    SELECT id
    FROM pgjobs_job
    WHERE queue = %(queue)s
      AND state IN ('available', 'scheduled', 'retryable')
      AND run_at <= %(now)s
      AND state = ANY(%(states)s)
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS due
WHERE job.id = due.id
RETURNING job.*
