-- Take back jobs whose worker is gone: its row deleted, its heartbeat older than
-- %(stale_before)s, or (claimed without a registered worker) claimed before then.
-- The lost attempt counts: the job is retryable now, or discarded if that was
-- its last attempt. Clearing the lease refuses whatever the lost worker writes later.
UPDATE pgjobs_job AS job
SET state = CASE WHEN job.attempt >= job.max_attempts THEN 'discarded' ELSE 'retryable' END,
    run_at = %(now)s,
    finished_at = CASE WHEN job.attempt >= job.max_attempts THEN %(now)s END,
    lease = NULL,
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempt,
        'at', to_json(%(now)s::timestamptz),
        'error', 'WorkerLost: worker ' || coalesce(job.worker_id::text, '(none)')
                 || ' stopped heartbeating while running this job',
        'traceback', ''
    ))
FROM (
    SELECT held.id
    FROM pgjobs_job AS held
    LEFT JOIN pgjobs_workerprocess AS w ON w.id = held.worker_id
    WHERE held.state = 'executing'
      AND CASE
            WHEN held.worker_id IS NULL THEN held.attempted_at < %(stale_before)s
            ELSE w.id IS NULL OR w.heartbeat_at < %(stale_before)s
          END
    FOR UPDATE OF held SKIP LOCKED
) AS lost
WHERE job.id = lost.id
RETURNING job.*
