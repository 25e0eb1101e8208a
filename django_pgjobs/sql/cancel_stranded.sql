-- Cancel the stranded jobs (sql/stranded.sql), which waited forever with nothing said,
-- as delete_many cancels the dependents of a deleted job, with an error that says why
-- (sql/stranded_error.sql); a retry makes one available. The cancellation releases
-- their own dependents, as any does (the job table's trigger).
-- The cancelled jobs (id, task, error), then a row of how far the search for cycles
-- got (id NULL: steps, steps_back, origins, last_origin).
-- include: stranded
, cancelled AS (
    UPDATE pgjobs_job AS job
    SET state = 'cancelled',
        finished_at = %(now)s,
        errors = job.errors || jsonb_build_array(jsonb_build_object(
            'attempt', job.attempt,
            'at', to_json(%(now)s::timestamptz),
            'error',
-- include: stranded_error
    ,
            'traceback', ''
        ))
    FROM stranded
    WHERE job.id = stranded.id AND job.state = 'waiting'
    RETURNING job.id, job.task, job.errors -> -1 ->> 'error' AS error
)
SELECT id, task, error, NULL::bigint AS steps, NULL::bigint AS steps_back,
       NULL::bigint AS origins, NULL::bigint AS last_origin
FROM cancelled
UNION ALL
SELECT NULL, NULL, NULL, steps, steps_back, origins, last_origin FROM search
