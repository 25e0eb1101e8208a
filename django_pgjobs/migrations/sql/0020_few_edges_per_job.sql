-- The planner counts on few dependency edges per job (migration 0020).
--
-- Every statement that reads pgjobs_jobdependency looks up the edges of given jobs
-- (prune's check of a finished job's dependents, the release of a finished job's
-- dependents, a gather job's results) and should do so through the edges' indexes.
-- But when one job has most of the table's edges (a job with 100,000 dependents, or
-- a gather job of 100,000 dependencies), ANALYZE finds one distinct value in the
-- column, and the planner takes any job to have every edge: prune looked for each
-- finished job's unfinished dependents by reading the whole job table, once per
-- finished job (a finished job with 100,000 finished dependents: 455 s to prune,
-- 28 s for 25,000; 10,000 took 6.9 s before migration 0020 and prune.sql's batches).
-- n_distinct = -0.5 tells the planner each job has about two edges on either side,
-- whatever the sample: lookups of one job's edges go through the indexes, which for
-- the job that does have 100,000 of them reads those, once. ANALYZE puts the
-- estimate in force now rather than at autovacuum's next visit.

ALTER TABLE pgjobs_jobdependency
    ALTER COLUMN depends_on_id SET (n_distinct = -0.5),
    ALTER COLUMN job_id SET (n_distinct = -0.5);

ANALYZE pgjobs_jobdependency;
