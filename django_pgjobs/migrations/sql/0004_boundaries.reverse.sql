-- 0004_boundaries, backwards: the job table's constraints go (the other tables' are
-- Django's own AddConstraint operations, which it removes itself). The values the
-- forward file moved into range were ones no reader could use: they are not put back.
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_timeout_in_range;
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_times_in_range;
