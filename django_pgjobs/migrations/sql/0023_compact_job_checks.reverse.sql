-- Before 0023: the three constraints as Django writes them from models.Job (the times
-- and the timeout as 0004 added them, the state list as 0001 did).

ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_times_in_range;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_times_in_range CHECK (
    "run_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "run_at" < '9999-12-31 00:00:00+00:00'::timestamptz
    AND "created_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "created_at" < '9999-12-31 00:00:00+00:00'::timestamptz
    AND ("attempted_at" IS NULL OR ("attempted_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "attempted_at" < '9999-12-31 00:00:00+00:00'::timestamptz))
    AND ("finished_at" IS NULL OR ("finished_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "finished_at" < '9999-12-31 00:00:00+00:00'::timestamptz))
) NOT VALID;
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_state_valid;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_state_valid CHECK (
    "state" IN ('waiting', 'scheduled', 'available', 'executing', 'retryable', 'completed', 'discarded', 'cancelled')
) NOT VALID;
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_timeout_in_range;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_timeout_in_range CHECK (
    "timeout" IS NULL OR ("timeout" > 0.0 AND "timeout" <= 31536000.0)
) NOT VALID;

ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_times_in_range;
ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_state_valid;
ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_timeout_in_range;
