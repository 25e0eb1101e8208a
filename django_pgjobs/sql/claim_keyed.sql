-- Claim due jobs of a queue with per-key limits: at most %(key_concurrency)s jobs of
-- one concurrency key (meta->>'concurrency_key', set at enqueue) executing at once,
-- at most %(key_rate_limit)s of them starting in any window of %(key_rate_period)s
-- seconds (either limit may be NULL: none), and within the queue's own concurrency
-- limit, if any. Only correct after lock_queue.sql in the same transaction: claimers
-- of the queue take turns, so the executing jobs counted here are all there are, and
-- each key's window (a RateWindow row, scope %(key_scope)s || key) holds every start
-- recorded before, all earlier than this statement's clock.
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
), clock AS (
    -- When these attempts start: under a queue rate limit, the time ratelimits
    -- records them at; else this statement's clock (later than the lock's taking).
    SELECT coalesce(%(started_at)s::timestamptz, statement_timestamp()) AS at
), running AS (
    SELECT meta ->> 'concurrency_key' AS key, count(*) AS executing
    FROM pgjobs_job
    WHERE %(key_concurrency)s::integer IS NOT NULL
      AND queue = %(queue)s
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
), started AS (
    -- Each due key's starts within its last period (a start at t is allowed while
    -- fewer than key_rate_limit recorded starts are later than t - period).
    SELECT keys.key, count(*) AS used
    FROM (SELECT DISTINCT key FROM ranked WHERE key IS NOT NULL) AS keys
    JOIN pgjobs_ratewindow AS window_row ON window_row.scope = %(key_scope)s || (
        -- As recorded below: a key longer than enqueue writes by its digest.
        CASE WHEN length(keys.key) <= %(key_length)s THEN keys.key
             ELSE 'md5:' || md5(keys.key) END
    )
    CROSS JOIN LATERAL unnest(window_row.starts) AS start_at
    CROSS JOIN clock
    WHERE %(key_rate_limit)s::integer IS NOT NULL
      AND start_at > clock.at - make_interval(secs => %(key_rate_period)s)
      -- A start after this clock was written by SQL ('infinity', a year ahead): no
      -- claim records one. Counted, it held the key's jobs back until then.
      AND start_at <= clock.at
    GROUP BY keys.key
), due AS MATERIALIZED (
    SELECT ranked.id, ranked.state
    FROM ranked
    LEFT JOIN running USING (key)
    LEFT JOIN started USING (key)
    WHERE ranked.key IS NULL
       OR ((%(key_concurrency)s::integer IS NULL
            OR ranked.place + coalesce(running.executing, 0) <= %(key_concurrency)s)
           AND (%(key_rate_limit)s::integer IS NULL
            OR ranked.place + coalesce(started.used, 0) <= %(key_rate_limit)s))
    ORDER BY ranked.priority DESC, ranked.run_at, ranked.id
    LIMIT greatest(0, least(
        %(limit)s,
        coalesce(%(concurrency)s::bigint, %(limit)s) - (
            SELECT count(*) FROM pgjobs_job WHERE queue = %(queue)s AND state = 'executing'
        )
    ))
), claimed AS (
    UPDATE pgjobs_job AS job
    SET state = 'executing',
        -- A counter at transitions.ATTEMPT_LIMIT (written by SQL) stays there: past it,
        -- "integer out of range" failed the claim, and every claim of the queue after it.
        attempt = least(job.attempt, 2147483646) + 1,
        attempted_at = clock.at,
        worker_id = %(worker_id)s,
        lease = gen_random_uuid()
    FROM publisher, clock
    WHERE job.id = ANY (ARRAY(SELECT id FROM due))
      AND job.state IN ('available', 'scheduled', 'retryable')
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
), recorded AS (
    -- The starts of each key, in its window, dropping those that left it and any
    -- after this clock (written by SQL; EXCLUDED.starts hold clock.at). A key
    -- longer than enqueue writes (by SQL) goes by its digest: the scope could not
    -- hold it, and the failed insert failed every claim of the queue.
    INSERT INTO pgjobs_ratewindow AS window_row (scope, starts, expires_at)
    SELECT %(key_scope)s || (
               CASE WHEN length(claimed.meta ->> 'concurrency_key') <= %(key_length)s
                    THEN claimed.meta ->> 'concurrency_key'
                    ELSE 'md5:' || md5(claimed.meta ->> 'concurrency_key') END
           ),
           array_fill(clock.at, ARRAY[count(*)::integer]),
           clock.at + make_interval(secs => %(key_rate_period)s)
    FROM claimed CROSS JOIN clock
    WHERE %(key_rate_limit)s::integer IS NOT NULL
      AND (claimed.meta ->> 'concurrency_key') IS NOT NULL
    GROUP BY claimed.meta ->> 'concurrency_key', clock.at
    ON CONFLICT (scope) DO UPDATE
    SET starts = array(
            SELECT start_at FROM unnest(window_row.starts) AS start_at
            WHERE start_at > EXCLUDED.expires_at - 2 * make_interval(secs => %(key_rate_period)s)
              AND start_at <= EXCLUDED.starts[1]
            ORDER BY start_at
        ) || EXCLUDED.starts,
        expires_at = EXCLUDED.expires_at
)
SELECT * FROM claimed
