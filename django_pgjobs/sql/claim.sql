-- Claim up to %(limit)s due jobs of one queue that has no concurrency limit.
-- SKIP LOCKED lets any number of workers claim side by side without waiting on
-- each other; the inner query matches the pgjobs_job_claim index. The jobs are
-- found again by primary key (id = ANY): a plan that can't know how many rows
-- the LIMIT gives (the planner guesses one) still never joins the whole table.
-- It is planned each time, not prepared (see db.PREPARABLE).
-- The UPDATE is not joined to "due": a join by id beside id = ANY made each job's
-- index probe go through the whole array again (a claim of 1,000 jobs took 33 ms
-- rather than 15). Each job's previous state is looked up instead, by binary
-- search (width_bucket) in the claimed ids sorted, once per job, as a position in a
-- three-state array: an array of the states' text themselves was walked from its
-- start to reach each job's (varlena elements have no fixed offset), 2 us of server
-- CPU per job in claims of 1,000 (bench/README.md).
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
      -- Paused since the worker last read its queues (their notification is on its
      -- way): no job starts once a pause committed. One probe of the queue's row.
      AND NOT EXISTS (SELECT 1 FROM pgjobs_queue WHERE name = %(queue)s AND paused)
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE pgjobs_job AS job
SET state = 'executing',
    -- A counter at transitions.ATTEMPT_LIMIT (written by SQL) stays there: past it,
    -- "integer out of range" failed the claim, and every claim of the queue after it.
    attempt = least(job.attempt, 2147483646) + 1,
    attempted_at = %(now)s,
    worker_id = %(worker_id)s,
    lease = gen_random_uuid()
FROM publisher
WHERE job.id = ANY (ARRAY(SELECT id FROM due))
RETURNING job.id,
    -- include: claimed_json
    job.task, job.queue, job.state, job.priority, job.attempt, job.max_attempts,
    job.timeout, job.run_at, job.created_at, job.attempted_at, job.finished_at,
    job.unique_key, job.connector, job.lease, job.pending_dependencies, job.worker_id,
    (ARRAY['available', 'scheduled', 'retryable'])[
        (ARRAY(
            SELECT array_position(ARRAY['available', 'scheduled', 'retryable'], state::text)
            FROM due ORDER BY id
        ))[width_bucket(job.id, ARRAY(SELECT id FROM due ORDER BY id))]
    ] AS previous
