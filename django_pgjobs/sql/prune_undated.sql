-- Delete one batch of finished jobs that have no finished_at (written by SQL: every
-- transition to a finished state writes one), which sql/prune.sql, walking the
-- finished jobs by finished_at, never reached. Each is dated by the latest time the
-- row says it had not finished yet: the start of its last attempt, or else its
-- creation (run_at may lie anywhere, and a cancelled job's never came). Found
-- through pgjobs_job_finished, which holds them under NULL; kept, as in prune.sql,
-- while a job not finished yet depends on one, and deleted with their edges.
WITH doomed AS (
    SELECT id
    FROM pgjobs_job AS job
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND finished_at IS NULL
      AND greatest(created_at, attempted_at) < %(finished_before)s
      AND NOT
-- include: prune_kept
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
),
-- include: prune_edges
, deleted AS (
    DELETE FROM pgjobs_job
    WHERE id IN (SELECT id FROM doomed)
    RETURNING id
)
SELECT count(*) AS deleted FROM deleted
