-- A running job adds %(new_ids)s to its pipeline: everything waiting for the
-- running job now also waits for them. Only jobs that exist and wait get edges:
-- an edge naming a job that doesn't exist (written by a session that skipped the
-- foreign keys' triggers) made this insert fail at commit, and the running job's
-- call with it, on every attempt.
WITH dependents AS (
    SELECT edge.job_id
    FROM pgjobs_jobdependency AS edge
    JOIN pgjobs_job AS job ON job.id = edge.job_id AND job.state = 'waiting'
    WHERE edge.depends_on_id = %(job_id)s AND NOT edge.satisfied
), edges AS (
    INSERT INTO pgjobs_jobdependency (job_id, depends_on_id, satisfied)
    SELECT dependents.job_id, new_id, false
    FROM dependents CROSS JOIN unnest(%(new_ids)s::bigint[]) AS new_id
    RETURNING job_id
)
UPDATE pgjobs_job AS job
SET pending_dependencies = job.pending_dependencies + added.count
FROM (SELECT job_id, count(*) AS count FROM edges GROUP BY job_id) AS added
WHERE job.id = added.job_id AND job.state = 'waiting'
