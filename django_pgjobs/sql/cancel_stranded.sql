-- Cancel waiting jobs that nothing can release any more: one of their unsatisfied
-- edges names a job that doesn't exist (deleted around transitions.delete_many,
-- which cancels such dependents itself: by SQL, or by a session that skipped the
-- foreign keys' triggers, as a restore of part of a dump does) or a job that has
-- finished (a job releases its edges as it finishes, once: this one was written
-- after, by SQL or a restore), or they count pending dependencies while no
-- unsatisfied edge is left (a row written by SQL).
-- Waiting forever with nothing said, they are cancelled as delete_many cancels the
-- dependents of a deleted job, with an error that says which job is missing; a
-- retry makes one available. The cancellation releases their own dependents, as
-- any does (the job table's trigger).
WITH missing AS (
    -- Every unsatisfied edge (pgjobs_dependency_unsatisfied), a key probe each: the
    -- first of each job's that names no job or a finished one, with its state (NULL:
    -- no such job).
    SELECT DISTINCT ON (edge.job_id)
           edge.job_id AS id, edge.depends_on_id AS dependency, dep.state AS ended
    FROM pgjobs_jobdependency AS edge
    LEFT JOIN pgjobs_job AS dep ON dep.id = edge.depends_on_id
    WHERE NOT edge.satisfied
      AND (dep.id IS NULL OR dep.state IN ('completed', 'discarded', 'cancelled'))
    ORDER BY edge.job_id, edge.depends_on_id
), unreleasable AS (
    -- Every waiting job (pgjobs_job_state_queue_rest), an edge probe each.
    SELECT job.id, NULL::bigint AS dependency, NULL::varchar AS ended
    FROM pgjobs_job AS job
    WHERE job.state = 'waiting'
      AND NOT EXISTS (
          SELECT FROM pgjobs_jobdependency AS edge WHERE edge.job_id = job.id AND NOT edge.satisfied
      )
), stranded AS (
    -- A job is in one of them at most: unreleasable ones have no unsatisfied edge.
    SELECT * FROM missing UNION ALL SELECT * FROM unreleasable
)
UPDATE pgjobs_job AS job
SET state = 'cancelled',
    finished_at = %(now)s,
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempt,
        'at', to_json(%(now)s::timestamptz),
        'error', 'DependencyFailed: ' || CASE
                     WHEN stranded.dependency IS NULL
                     THEN 'it waits for ' || job.pending_dependencies
                          || ' dependencies, but no job it depends on is unfinished'
                     WHEN stranded.ended IS NULL
                     THEN 'job ' || stranded.dependency || ' does not exist'
                     ELSE 'job ' || stranded.dependency || ' ended ' || stranded.ended
                          || ' without releasing it'
                 END,
        'traceback', ''
    ))
FROM stranded
WHERE job.id = stranded.id AND job.state = 'waiting'
RETURNING job.id, job.task, job.errors -> -1 ->> 'error' AS error
