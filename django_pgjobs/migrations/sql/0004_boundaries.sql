-- 0004_boundaries: make the rows that this migration's CHECK constraints refuse
-- allowed, and add the job table's constraints (issue 16).
--
-- Before them, a POST /jobs with run_at 0001-01-01T00:00:00+14:00 was stored as a BC
-- timestamp, which psycopg can't load: every worker claiming it failed, and the admin
-- and the API answered 500 on it. Each value outside what a reader can use is moved to
-- the nearest one allowed, which keeps its meaning: a time long past is still due now,
-- one in the far future still never comes (times lie in [0001-01-02, 9999-12-31) UTC,
-- a day inside Python's years 1-9999 so that every time zone can show them); a timeout
-- that is no finite number of seconds (NaN, infinite, 0 or less) means none, one over
-- a year means a year; a queue's backoff value no retry can be computed from means the
-- default. Each UPDATE touches only such rows: none, on a database enqueue guarded.
--
-- The other tables are small: their constraints are Django's AddConstraint operations,
-- which follow this file.

UPDATE pgjobs_schedule SET
    created_at = CASE WHEN created_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN created_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE created_at END,
    updated_at = CASE WHEN updated_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN updated_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE updated_at END,
    last_fire_at = CASE WHEN last_fire_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN last_fire_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE last_fire_at END,
    next_fire_at = CASE WHEN next_fire_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN next_fire_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE next_fire_at END
WHERE created_at < '0001-01-02 00:00:00+00' OR created_at >= '9999-12-31 00:00:00+00'
   OR updated_at < '0001-01-02 00:00:00+00' OR updated_at >= '9999-12-31 00:00:00+00'
   OR last_fire_at < '0001-01-02 00:00:00+00' OR last_fire_at >= '9999-12-31 00:00:00+00'
   OR next_fire_at < '0001-01-02 00:00:00+00' OR next_fire_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_scheduletick SET
    fire_at = CASE WHEN fire_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN fire_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE fire_at END,
    fired_at = CASE WHEN fired_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN fired_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE fired_at END
WHERE fire_at < '0001-01-02 00:00:00+00' OR fire_at >= '9999-12-31 00:00:00+00'
   OR fired_at < '0001-01-02 00:00:00+00' OR fired_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_routine SET
    next_run_at = CASE WHEN next_run_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN next_run_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE next_run_at END,
    last_run_at = CASE WHEN last_run_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN last_run_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE last_run_at END
WHERE next_run_at < '0001-01-02 00:00:00+00' OR next_run_at >= '9999-12-31 00:00:00+00'
   OR last_run_at < '0001-01-02 00:00:00+00' OR last_run_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_workerprocess SET
    started_at = CASE WHEN started_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN started_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE started_at END,
    heartbeat_at = CASE WHEN heartbeat_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN heartbeat_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE heartbeat_at END
WHERE started_at < '0001-01-02 00:00:00+00' OR started_at >= '9999-12-31 00:00:00+00'
   OR heartbeat_at < '0001-01-02 00:00:00+00' OR heartbeat_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_schedulerprocess SET
    started_at = CASE WHEN started_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN started_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE started_at END,
    heartbeat_at = CASE WHEN heartbeat_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN heartbeat_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE heartbeat_at END
WHERE started_at < '0001-01-02 00:00:00+00' OR started_at >= '9999-12-31 00:00:00+00'
   OR heartbeat_at < '0001-01-02 00:00:00+00' OR heartbeat_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_connector SET
    created_at = CASE WHEN created_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN created_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE created_at END,
    updated_at = CASE WHEN updated_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN updated_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE updated_at END
WHERE created_at < '0001-01-02 00:00:00+00' OR created_at >= '9999-12-31 00:00:00+00'
   OR updated_at < '0001-01-02 00:00:00+00' OR updated_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_apitoken SET
    created_at = CASE WHEN created_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN created_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE created_at END,
    expires_at = CASE WHEN expires_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN expires_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE expires_at END,
    last_used_at = CASE WHEN last_used_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN last_used_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE last_used_at END
WHERE created_at < '0001-01-02 00:00:00+00' OR created_at >= '9999-12-31 00:00:00+00'
   OR expires_at < '0001-01-02 00:00:00+00' OR expires_at >= '9999-12-31 00:00:00+00'
   OR last_used_at < '0001-01-02 00:00:00+00' OR last_used_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_queue SET
    updated_at = CASE WHEN updated_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN updated_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE updated_at END
WHERE updated_at < '0001-01-02 00:00:00+00' OR updated_at >= '9999-12-31 00:00:00+00';

UPDATE pgjobs_queue SET
    backoff_strategy = CASE WHEN backoff_strategy IN ('', 'exponential', 'linear', 'fixed')
        THEN backoff_strategy ELSE '' END,
    backoff_base = CASE WHEN backoff_base BETWEEN 0 AND 31536000 THEN backoff_base END,
    backoff_max = CASE WHEN backoff_max BETWEEN 0 AND 31536000 THEN backoff_max END,
    backoff_jitter = CASE WHEN backoff_jitter BETWEEN 0 AND 1 THEN backoff_jitter END
WHERE backoff_strategy NOT IN ('', 'exponential', 'linear', 'fixed')
   OR NOT backoff_base BETWEEN 0 AND 31536000
   OR NOT backoff_max BETWEEN 0 AND 31536000
   OR NOT backoff_jitter BETWEEN 0 AND 1;

-- The job table may hold millions of rows. Its constraints (the models'
-- pgjobs_job_times_in_range and pgjobs_job_timeout_in_range, as Django writes them:
-- tests/test_hardening_rows.py compares them) are added NOT VALID, which checks only
-- the rows written from then on and holds its lock for a moment; the rows before are
-- repaired (with those a worker of the previous version may write meanwhile); then
-- VALIDATE reads the whole table under a lock that lets enqueues and workers carry on.
-- The migration is not atomic, so that each statement commits on its own; DROP ... IF
-- EXISTS lets a migration stopped half-way run again.
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_times_in_range;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_times_in_range CHECK (
    "run_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "run_at" < '9999-12-31 00:00:00+00:00'::timestamptz
    AND "created_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "created_at" < '9999-12-31 00:00:00+00:00'::timestamptz
    AND ("attempted_at" IS NULL OR ("attempted_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "attempted_at" < '9999-12-31 00:00:00+00:00'::timestamptz))
    AND ("finished_at" IS NULL OR ("finished_at" >= '0001-01-02 00:00:00+00:00'::timestamptz AND "finished_at" < '9999-12-31 00:00:00+00:00'::timestamptz))
) NOT VALID;
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_timeout_in_range;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_timeout_in_range CHECK (
    "timeout" IS NULL OR ("timeout" > 0.0 AND "timeout" <= 31536000.0)
) NOT VALID;

-- One statement for both: each new row version must pass both constraints.
UPDATE pgjobs_job SET
    run_at = CASE WHEN run_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN run_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE run_at END,
    created_at = CASE WHEN created_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN created_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE created_at END,
    attempted_at = CASE WHEN attempted_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN attempted_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE attempted_at END,
    finished_at = CASE WHEN finished_at < '0001-01-02 00:00:00+00' THEN '0001-01-02 00:00:00+00'
        WHEN finished_at >= '9999-12-31 00:00:00+00' THEN '9999-12-30 23:59:59.999999+00' ELSE finished_at END,
    timeout = CASE WHEN timeout > 0 AND timeout <= 31536000 THEN timeout
        WHEN timeout > 31536000 AND timeout < 'Infinity' THEN 31536000 END
WHERE run_at < '0001-01-02 00:00:00+00' OR run_at >= '9999-12-31 00:00:00+00'
   OR created_at < '0001-01-02 00:00:00+00' OR created_at >= '9999-12-31 00:00:00+00'
   OR attempted_at < '0001-01-02 00:00:00+00' OR attempted_at >= '9999-12-31 00:00:00+00'
   OR finished_at < '0001-01-02 00:00:00+00' OR finished_at >= '9999-12-31 00:00:00+00'
   OR NOT (timeout > 0 AND timeout <= 31536000);

ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_times_in_range;
ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_timeout_in_range;
