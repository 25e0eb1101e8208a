-- Delete one batch of jobs finished before %(finished_before)s. Small batches in
-- their own transactions keep locks short; SKIP LOCKED steps around rows an
-- operator is touching right now.
DELETE FROM pgjobs_job
WHERE id IN (
    SELECT id
    FROM pgjobs_job
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND finished_at < %(finished_before)s
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)
