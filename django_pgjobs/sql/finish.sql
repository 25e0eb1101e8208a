-- Write the outcomes of many attempts in one statement (%(outcomes)s: a JSON
-- array, one object per job; one document binds far faster than seven arrays): completed (with its
-- result), retryable (run again at run_at) or discarded, each with its error
-- appended. Lease-checked per job: a job whose lease was taken away (rescued,
-- cancelled, handed back) is not matched, and is missing from what this returns.
-- Returns only what the caller doesn't know already (errors only when they grew).
-- The jobs are found by primary key (id = ANY), one probe per outcome: the
-- state check is written so that it can't match the pgjobs_job_executing index,
-- which the planner took instead (it guesses few executing jobs) and which made
-- each statement read every executing job of every worker (a thousand, in a
-- busy drain) to write a few dozen.
WITH publisher AS (
    -- The worker publishes these events itself once this commits (see events.py).
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
), outcome AS MATERIALIZED (
    SELECT *
    FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS outcome (
        id bigint,
        lease uuid,
        state text,
        result jsonb,
        error jsonb,
        run_at timestamptz,
        finished_at timestamptz
    )
)
UPDATE pgjobs_job AS job
SET state = outcome.state,
    result = CASE WHEN outcome.state = 'completed' THEN outcome.result ELSE job.result END,
    errors = CASE
        WHEN outcome.error IS NULL THEN job.errors
        ELSE job.errors || jsonb_build_array(outcome.error)
    END,
    run_at = coalesce(outcome.run_at, job.run_at),
    finished_at = outcome.finished_at,
    lease = NULL
FROM outcome, publisher
WHERE job.id = ANY (ARRAY(SELECT id FROM outcome))
  AND job.id = outcome.id
  AND (job.state = 'executing') IS TRUE  -- state is NOT NULL: the same as = 'executing'
  AND job.lease = outcome.lease
-- Errors over %(most)s bytes stored (written by SQL) are not sent back (loaded.py).
RETURNING job.id,
    CASE
        WHEN outcome.error IS NOT NULL AND pg_column_size(job.errors) <= %(most)s
        THEN job.errors
    END AS errors
