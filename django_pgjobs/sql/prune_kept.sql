-- Whether a finished job (job) is kept because a job not finished yet depends on it:
-- a gather job reads its dependencies' results when it runs. prune.sql and
-- prune_undated.sql include it; not a statement of its own. Probed per candidate
-- through the edges' index (mostly finding none): the OFFSET keeps the planner from
-- making it an anti-join, which read every unfinished job for each batch (measured:
-- 3 ms a batch against 200 ms at 300,000 jobs, and a subquery in any other form was
-- JIT-compiled, 200 ms).
EXISTS (
    SELECT FROM pgjobs_jobdependency AS edge
    JOIN pgjobs_job AS dependent ON dependent.id = edge.job_id
    WHERE edge.depends_on_id = job.id
      AND dependent.state NOT IN ('completed', 'discarded', 'cancelled')
    OFFSET 0
)
