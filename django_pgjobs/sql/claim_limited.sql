-- Claim due jobs of a queue with a global concurrency limit, up to what the
-- limit leaves free. Only correct after lock_queue.sql in the same transaction.
-- Under a rate limit, %(limit)s is what its window has left, and the attempts
-- start at %(started_at)s, the database's time ratelimits records them at.
WITH publisher AS (
    -- The worker publishes these events itself once this commits (see events.py).
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
), due AS MATERIALIZED (
    -- Found again by primary key below, for a sound plan (see claim.sql).
    SELECT id, state
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
)
UPDATE pgjobs_job AS job
SET state = 'executing',
    -- A counter at transitions.ATTEMPT_LIMIT (written by SQL) stays there: past it,
    -- "integer out of range" failed the claim, and every claim of the queue after it.
    attempt = least(job.attempt, 2147483646) + 1,
    attempted_at = %(started_at)s,
    worker_id = %(worker_id)s,
    lease = gen_random_uuid()
FROM publisher
WHERE job.id = ANY (ARRAY(SELECT id FROM due))
RETURNING job.id,
    -- include: claimed_json
    job.task, job.queue, job.state, job.priority, job.attempt, job.max_attempts,
    job.timeout, job.run_at, job.created_at, job.attempted_at, job.finished_at,
    job.unique_key, job.connector, job.lease, job.pending_dependencies, job.worker_id,
    -- Each job's previous state by binary search, not a join (see claim.sql).
    (ARRAY['available', 'scheduled', 'retryable'])[
        (ARRAY(
            SELECT array_position(ARRAY['available', 'scheduled', 'retryable'], state::text)
            FROM due ORDER BY id
        ))[width_bucket(job.id, ARRAY(SELECT id FROM due ORDER BY id))]
    ] AS previous
