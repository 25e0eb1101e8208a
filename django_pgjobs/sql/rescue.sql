-- Take back jobs whose worker is gone: listed in %(dead_workers)s (its process was
-- seen to end), its row deleted, its heartbeat older than %(stale_before)s or later
-- than %(beyond)s (no live worker's: written by SQL), or (claimed without a
-- registered worker) claimed outside those times, or never (written by SQL).
--
-- Which of a lost worker's jobs took it down, if one did, can't be told: it may
-- have died of one of them or of something else, and some were maybe only
-- prefetched, never started. So the lost attempt counts against none of them:
-- each is available again with its attempt given back, at its place in the queue
-- (run_at unchanged: it was due, and it goes before what became due since), and
-- one more crash in meta.crashes. A worker runs a job with crashes alone in a
-- child process (isolation.py), where a death is pinned on it for certain and
-- counts as its attempt. Only a job lost more than max_attempts times (it took
-- its worker down even when run alone) is discarded here.
-- Clearing the lease refuses whatever the lost worker writes later.
UPDATE pgjobs_job AS job
SET state = CASE WHEN lost.crashes > job.max_attempts THEN 'discarded' ELSE 'available' END,
    attempt = CASE
        WHEN lost.crashes > job.max_attempts THEN job.attempt
        ELSE greatest(job.attempt - 1, 0)
    END,
    finished_at = CASE WHEN lost.crashes > job.max_attempts THEN %(now)s END,
    lease = NULL,
    worker_id = NULL,
    -- A meta that is not an object (written around the API) is replaced, not fatal.
    meta = CASE WHEN jsonb_typeof(job.meta) = 'object' THEN job.meta ELSE '{}' END
           || jsonb_build_object('crashes', lost.crashes),
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempt,
        'at', to_json(%(now)s::timestamptz),
        'error', 'WorkerLost: worker ' || coalesce(job.worker_id::text, '(none)')
                 || ' was lost while holding this job (crash ' || lost.crashes || '; '
                 || CASE
                        WHEN lost.crashes > job.max_attempts
                        THEN 'more than max_attempts: discarded)'
                        ELSE 'not counted as an attempt; it runs alone next)'
                    END,
        'traceback', ''
    ))
FROM (
    SELECT held.id,
           coalesce(CASE
               WHEN jsonb_typeof(held.meta -> 'crashes') = 'number'
               THEN greatest(least(floor((held.meta ->> 'crashes')::numeric), 1000000), 0)::int
           END, 0) + 1 AS crashes
    FROM pgjobs_job AS held
    LEFT JOIN pgjobs_workerprocess AS w ON w.id = held.worker_id
    WHERE held.state = 'executing'
      AND CASE
            WHEN held.worker_id IS NULL
            THEN held.attempted_at IS NULL OR held.attempted_at < %(stale_before)s
                 OR held.attempted_at > %(beyond)s
            ELSE w.id IS NULL OR w.heartbeat_at < %(stale_before)s
                 OR w.heartbeat_at > %(beyond)s
                 OR held.worker_id = ANY(%(dead_workers)s::bigint[])
          END
    FOR UPDATE OF held SKIP LOCKED
) AS lost
WHERE job.id = lost.id
RETURNING job.id,
    -- include: claimed_json
    job.task, job.queue, job.state, job.priority, job.attempt, job.max_attempts,
    job.timeout, job.run_at, job.created_at, job.attempted_at, job.finished_at,
    job.unique_key, job.connector, job.lease, job.pending_dependencies, job.worker_id
