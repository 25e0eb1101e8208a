-- Cancel waiting jobs that nothing can release any more: one of their unsatisfied
-- edges names a job that doesn't exist (deleted around transitions.delete_many,
-- which cancels such dependents itself: by SQL, or by a session that skipped the
-- foreign keys' triggers, as a restore of part of a dump does), or they count
-- pending dependencies while no unsatisfied edge is left (a row written by SQL).
-- Waiting forever with nothing said, they are cancelled as delete_many cancels the
-- dependents of a deleted job, with an error that says which job is missing; a
-- retry makes one available. The cancellation releases their own dependents, as
-- any does (the job table's trigger).
WITH missing AS (
    -- Every unsatisfied edge (pgjobs_dependency_unsatisfied), a key probe each.
    SELECT edge.job_id AS id, min(edge.depends_on_id) AS dependency
    FROM pgjobs_jobdependency AS edge
    WHERE NOT edge.satisfied
      AND NOT EXISTS (SELECT FROM pgjobs_job AS dep WHERE dep.id = edge.depends_on_id)
    GROUP BY edge.job_id
), unreleasable AS (
    -- Every waiting job (pgjobs_job_state_queue_rest), an edge probe each.
    SELECT job.id, NULL::bigint AS dependency
    FROM pgjobs_job AS job
    WHERE job.state = 'waiting'
      AND NOT EXISTS (
          SELECT FROM pgjobs_jobdependency AS edge WHERE edge.job_id = job.id AND NOT edge.satisfied
      )
), stranded AS (
    SELECT id, min(dependency) AS dependency
    FROM (SELECT * FROM missing UNION ALL SELECT * FROM unreleasable) AS found
    GROUP BY id
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
                     ELSE 'job ' || stranded.dependency || ' does not exist'
                 END,
        'traceback', ''
    ))
FROM stranded
WHERE job.id = stranded.id AND job.state = 'waiting'
RETURNING job.id, job.task, job.errors -> -1 ->> 'error' AS error
