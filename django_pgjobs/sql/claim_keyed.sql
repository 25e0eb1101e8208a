-- Claim due jobs of a queue with a per-key limit (Queue.key_concurrency): at most
-- %(key_concurrency)s jobs of one concurrency key (meta->>'concurrency_key', set at
-- enqueue) executing at once, and within the queue's own concurrency limit, if any.
-- Only correct after lock_queue.sql in the same transaction: claimers of the queue
-- take turns, so the executing jobs counted here are all there are.
--
-- Fairness: a key at its limit holds back its own jobs only. Among the jobs whose
-- key has room (and those without a key), the usual order decides: priority, then
-- run_at, then id. So a key with a thousand jobs waiting can't starve the others:
-- their jobs are claimed as soon as they are due, beside its N.
--
-- What it costs: the due jobs of the queue are ranked within their key on every
-- claim (no SKIP LOCKED with a window function, hence the state check in the UPDATE,
-- which leaves a job that was cancelled meanwhile alone), so a claim reads the
-- queue's whole due backlog: fine for thousands, slow for millions.
WITH publisher AS (
    -- The worker publishes these events itself once this commits (see events.py).
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
), running AS (
    SELECT meta ->> 'concurrency_key' AS key, count(*) AS executing
    FROM pgjobs_job
    WHERE queue = %(queue)s
      AND state = 'executing'
      AND (meta ->> 'concurrency_key') IS NOT NULL
    GROUP BY 1
), ranked AS (
    SELECT id, state, priority, run_at,
           meta ->> 'concurrency_key' AS key,
           row_number() OVER (
               PARTITION BY meta ->> 'concurrency_key' ORDER BY priority DESC, run_at, id
           ) AS place
    FROM pgjobs_job
    WHERE queue = %(queue)s
      AND state IN ('available', 'scheduled', 'retryable')
      AND run_at <= %(now)s
      AND state = ANY(%(states)s)
), due AS MATERIALIZED (
    SELECT ranked.id, ranked.state
    FROM ranked
    LEFT JOIN running USING (key)
    WHERE ranked.key IS NULL
       OR ranked.place + coalesce(running.executing, 0) <= %(key_concurrency)s
    ORDER BY ranked.priority DESC, ranked.run_at, ranked.id
    LIMIT greatest(0, least(
        %(limit)s,
        coalesce(%(concurrency)s::bigint, %(limit)s) - (
            SELECT count(*) FROM pgjobs_job WHERE queue = %(queue)s AND state = 'executing'
        )
    ))
)
UPDATE pgjobs_job AS job
SET state = 'executing',
    attempt = job.attempt + 1,
    attempted_at = %(started_at)s,
    worker_id = %(worker_id)s,
    lease = gen_random_uuid()
FROM due, publisher
WHERE job.id = ANY (ARRAY(SELECT id FROM due))
  AND job.id = due.id
  AND job.state IN ('available', 'scheduled', 'retryable')
RETURNING job.*, due.state AS previous
