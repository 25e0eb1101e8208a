-- The job table's three largest CHECK constraints, the same rules written compactly
-- (migration 0023).
--
-- PostgreSQL reads each CHECK constraint back from its stored text and plans it for
-- every statement that writes the table, not once per session: for Job.enqueue's
-- one-row INSERT, the job table's eight were 12-14% of the backend's CPU in perf
-- (bench/README.md, "Where the backends' CPU goes"), ~18 us per statement in a loop of
-- one-row INSERTs. Their cost is the size of those expressions; as Django writes them
-- (from the Q objects of models.Job, which still state them and which model
-- validation and the admin evaluate), the times in range were 3,871 characters of
-- node text, the state list 2,179 (eight constants, coerced to an array on every
-- statement), the timeout 1,383. Written as below: one range containing all four
-- times (a NULL time passes, as before), one array constant, two comparisons (a NULL
-- timeout passes, as before): ~11 us. tests/test_hardening_rows.py checks they
-- accept and refuse exactly what the models' do.
--
-- Added NOT VALID (checking only new rows, with a moment's lock) and validated after
-- (a read of the whole table under a lock that lets enqueues and workers carry on):
-- the migration is not atomic, so each statement commits on its own, and DROP ... IF
-- EXISTS lets one stopped half-way run again. Rows already there passed the same
-- rules.

ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_times_in_range;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_times_in_range CHECK (
    '[0001-01-02 00:00:00+00, 9999-12-31 00:00:00+00)'::tstzrange
        @> ALL (ARRAY[run_at, created_at, attempted_at, finished_at])
) NOT VALID;
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_state_valid;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_state_valid CHECK (
    state::text = ANY (
        '{waiting,scheduled,available,executing,retryable,completed,discarded,cancelled}'::text[]
    )
) NOT VALID;
ALTER TABLE pgjobs_job DROP CONSTRAINT IF EXISTS pgjobs_job_timeout_in_range;
ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_timeout_in_range CHECK (
    timeout > 0.0 AND timeout <= 31536000.0
) NOT VALID;

ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_times_in_range;
ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_state_valid;
ALTER TABLE pgjobs_job VALIDATE CONSTRAINT pgjobs_job_timeout_in_range;
