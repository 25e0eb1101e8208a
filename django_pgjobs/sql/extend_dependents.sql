-- A running job adds %(new_ids)s to its pipeline: everything waiting for the
-- running job now also waits for them.
WITH dependents AS (
    SELECT job_id FROM pgjobs_jobdependency
    WHERE depends_on_id = %(job_id)s AND NOT satisfied
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
