-- Results of the jobs a job depends on, in dependency order, for gather jobs.
SELECT dep.id, dep.state, dep.result
FROM pgjobs_jobdependency AS edge
JOIN pgjobs_job AS dep ON dep.id = edge.depends_on_id
WHERE edge.job_id = %(job_id)s
ORDER BY dep.id
