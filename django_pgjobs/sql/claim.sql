-- Claim up to %(limit)s due jobs of one queue that has no concurrency limit.
-- SKIP LOCKED lets any number of workers claim side by side without waiting on
-- each other; the inner query matches the pgjobs_job_claim index. The jobs are
-- found again by primary key (id = ANY): a plan that can't know how many rows
-- the LIMIT gives (the planner guesses one) still never joins the whole table.
-- It is planned each time, not prepared (see db.PREPARABLE).
WITH publisher AS (
    -- The worker publishes these events itself once this commits (see events.py).
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
), due AS MATERIALIZED (
    SELECT id, state
    FROM pgjobs_job
    WHERE queue = %(queue)s
      AND state IN ('available', 'scheduled', 'retryable')
      AND run_at <= %(now)s
      AND state = ANY(%(states)s)
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE pgjobs_job AS job
SET state = 'executing',
    attempt = job.attempt + 1,
    attempted_at = %(now)s,
    worker_id = %(worker_id)s,
    lease = gen_random_uuid()
FROM due, publisher
WHERE job.id = ANY (ARRAY(SELECT id FROM due))
  AND job.id = due.id
RETURNING job.*, due.state AS previous
