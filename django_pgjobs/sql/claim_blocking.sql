-- Claim the head of a blocking queue: nothing while one of its jobs executes;
-- a job waiting for its retry is the head until it has run again, so order
-- holds across failures. Only correct after lock_queue.sql in the same transaction.
-- A head outside the requested states is left alone, and nothing behind it runs either.
WITH publisher AS (
    -- The worker publishes these events itself once this commits (see events.py).
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
)
UPDATE pgjobs_job AS job
SET state = 'executing',
    -- A counter at transitions.ATTEMPT_LIMIT (written by SQL) stays there: past it,
    -- "integer out of range" failed the claim, and every claim of the queue after it.
    attempt = least(job.attempt, 2147483646) + 1,
    attempted_at = %(now)s,
    worker_id = %(worker_id)s,
    lease = gen_random_uuid()
FROM (
    SELECT id, run_at, state
    FROM pgjobs_job
    WHERE queue = %(queue)s
      AND state IN ('available', 'scheduled', 'retryable')
      AND (run_at <= %(now)s OR state = 'retryable')
      AND NOT EXISTS (
          SELECT 1 FROM pgjobs_job WHERE queue = %(queue)s AND state = 'executing'
      )
    ORDER BY state = 'retryable' DESC, priority DESC, run_at, id
    LIMIT 1
    FOR UPDATE
) AS head, publisher
WHERE job.id = head.id AND head.run_at <= %(now)s AND head.state = ANY(%(states)s)
RETURNING job.id,
    -- include: claimed_json
    job.task, job.queue, job.state, job.priority, job.attempt, job.max_attempts,
    job.timeout, job.run_at, job.created_at, job.attempted_at, job.finished_at,
    job.unique_key, job.connector, job.lease, job.pending_dependencies, job.worker_id,
    head.state AS previous
