-- Cancel the stranded jobs (sql/stranded.sql), which waited forever with nothing said,
-- as delete_many cancels the dependents of a deleted job, with an error that says why
-- (sql/stranded_error.sql); a retry makes one available. The cancellation releases
-- their own dependents, as any does (the job table's trigger).
-- include: stranded
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
