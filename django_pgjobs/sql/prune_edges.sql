-- The CTE that deletes the dependency edges of a batch of jobs (doomed), to or from
-- them, in the statement that deletes the jobs: prune.sql and prune_undated.sql
-- include it; not a statement of its own. The edges are found by joining the batch,
-- through the edges' indexes: as "job_id = ANY (ARRAY(SELECT id FROM doomed)) OR
-- depends_on_id = ANY (...)" the planner, expecting a short array, read every edge
-- and searched both arrays for each (a finished gather job of 100,000 dependencies:
-- 300 ms a batch, 38.7 s to prune them all, against 2.7 s for 25,000).
edges AS (
    DELETE FROM pgjobs_jobdependency
    WHERE id IN (
        SELECT edge.id FROM doomed JOIN pgjobs_jobdependency AS edge ON edge.job_id = doomed.id
        UNION ALL
        SELECT edge.id FROM doomed JOIN pgjobs_jobdependency AS edge
            ON edge.depends_on_id = doomed.id
    )
)
