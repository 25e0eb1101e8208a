-- Delete one batch of jobs finished before %(finished_before)s, and their dependency
-- edges in the same statement: the edges' foreign keys are checked at commit, and
-- one edge left naming a deleted job refused the whole batch. A finished job that
-- a job not finished yet still depends on is kept until that one finishes: a
-- gather job reads its dependencies' results when it runs. Small batches in their
-- own transactions keep locks short; SKIP LOCKED steps around rows an operator is
-- touching right now.
--
-- Each batch starts where the last one ended (%(finished_from)s, the newest
-- finished_at it deleted): batches read the finished jobs oldest first, once per
-- prune, where each used to read again from the start every job it kept (a gather
-- job's 50,000 finished dependencies, with the gather still waiting: 100,000 jobs
-- took 19.8 s, against 1.6 s for 25,000). Rows at that exact time are read again,
-- so none is passed over; those kept are left for the next prune.
WITH doomed AS (
    SELECT id, finished_at
    FROM pgjobs_job AS job
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND finished_at < %(finished_before)s
      AND finished_at >= %(finished_from)s
      -- Probed per candidate through the edges' index (mostly finding none): the
      -- OFFSET keeps the planner from making it an anti-join, which read every
      -- unfinished job for each batch (measured: 3 ms a batch against 200 ms at
      -- 300,000 jobs, and a subquery in any other form was JIT-compiled, 200 ms).
      AND NOT EXISTS (
          SELECT FROM pgjobs_jobdependency AS edge
          JOIN pgjobs_job AS dependent ON dependent.id = edge.job_id
          WHERE edge.depends_on_id = job.id
            AND dependent.state NOT IN ('completed', 'discarded', 'cancelled')
          OFFSET 0
      )
    ORDER BY finished_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), edges AS (
    -- The edges are found by joining the batch, through the edges' indexes: as
    -- "job_id = ANY (ARRAY(SELECT id FROM doomed)) OR depends_on_id = ANY (...)" the
    -- planner, expecting a short array, read every edge and searched both arrays
    -- for each (a finished gather job of 100,000 dependencies: 300 ms a batch,
    -- 38.7 s to prune them all, against 2.7 s for 25,000).
    DELETE FROM pgjobs_jobdependency
    WHERE id IN (
        SELECT edge.id FROM doomed JOIN pgjobs_jobdependency AS edge ON edge.job_id = doomed.id
        UNION ALL
        SELECT edge.id FROM doomed JOIN pgjobs_jobdependency AS edge
            ON edge.depends_on_id = doomed.id
    )
), deleted AS (
    DELETE FROM pgjobs_job
    WHERE id IN (SELECT id FROM doomed)
    RETURNING finished_at
)
SELECT count(*) AS deleted, max(finished_at) AS finished_at FROM deleted
