-- Cancel waiting jobs that nothing can release any more: one of their unsatisfied
-- edges names a job that doesn't exist (deleted around transitions.delete_many,
-- which cancels such dependents itself: by SQL, or by a session that skipped the
-- foreign keys' triggers, as a restore of part of a dump does) or a job that has
-- finished (a job releases its edges as it finishes, once: this one was written
-- after, by SQL or a restore), or they count pending dependencies while no
-- unsatisfied edge is left (a row written by SQL). Also those counting fewer than
-- their unsatisfied edges (a row written by SQL): the job table's trigger counts one
-- off as each finishes, and below zero the CHECK refused that dependency's finish,
-- every time (at zero the job was released while a dependency still ran).
-- Waiting forever with nothing said, they are cancelled as delete_many cancels the
-- dependents of a deleted job, with an error that says which job is missing; a
-- retry makes one available. The cancellation releases their own dependents, as
-- any does (the job table's trigger).
WITH unsatisfied AS MATERIALIZED (
    -- Every unsatisfied edge (pgjobs_dependency_unsatisfied), a key probe each for
    -- its dependency's state (found false: no such job).
    SELECT edge.job_id, edge.depends_on_id, dep.id IS NOT NULL AS found, dep.state AS ended
    FROM pgjobs_jobdependency AS edge
    LEFT JOIN pgjobs_job AS dep ON dep.id = edge.depends_on_id
    WHERE NOT edge.satisfied
), missing AS (
    -- The first edge of each job that names no job (ended NULL) or a finished one.
    SELECT DISTINCT ON (job_id)
           job_id AS id, depends_on_id AS dependency, ended, NULL::bigint AS waits_for
    FROM unsatisfied
    WHERE NOT found OR ended IN ('completed', 'discarded', 'cancelled')
    ORDER BY job_id, depends_on_id
), undercounted AS (
    -- Each waiting job counting fewer dependencies than its unsatisfied edges.
    SELECT job.id, NULL::bigint AS dependency, NULL::varchar AS ended, counted.waits_for
    FROM (SELECT job_id, count(*) AS waits_for FROM unsatisfied GROUP BY job_id) AS counted
    JOIN pgjobs_job AS job ON job.id = counted.job_id
    WHERE job.state = 'waiting' AND job.pending_dependencies < counted.waits_for
), unreleasable AS (
    -- Every waiting job (pgjobs_job_state_queue_rest), an edge probe each.
    SELECT job.id, NULL::bigint AS dependency, NULL::varchar AS ended,
           NULL::bigint AS waits_for
    FROM pgjobs_job AS job
    WHERE job.state = 'waiting'
      AND NOT EXISTS (
          SELECT FROM pgjobs_jobdependency AS edge WHERE edge.job_id = job.id AND NOT edge.satisfied
      )
), stranded AS (
    -- One reason a job, a missing or finished dependency first (it names the job);
    -- unreleasable ones have no unsatisfied edge, so are in no other.
    SELECT DISTINCT ON (id) *
    FROM (
        SELECT * FROM missing
        UNION ALL SELECT * FROM undercounted
        UNION ALL SELECT * FROM unreleasable
    ) AS found
    ORDER BY id, dependency IS NULL
)
UPDATE pgjobs_job AS job
SET state = 'cancelled',
    finished_at = %(now)s,
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempt,
        'at', to_json(%(now)s::timestamptz),
        'error', 'DependencyFailed: ' || CASE
                     WHEN stranded.waits_for IS NOT NULL
                     THEN 'it counts ' || job.pending_dependencies
                          || ' unfinished dependencies, but waits for ' || stranded.waits_for
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
