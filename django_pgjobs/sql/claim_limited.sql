-- Claim due jobs of a queue with a global concurrency limit, up to what the
-- limit leaves free. Only correct after lock_queue.sql in the same transaction.
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
    LIMIT greatest(0, least(
        %(limit)s,
        %(concurrency)s - (
            SELECT count(*) FROM pgjobs_job WHERE queue = %(queue)s AND state = 'executing'
        )
    ))
    FOR UPDATE SKIP LOCKED
) AS due
WHERE job.id = due.id
RETURNING job.*
