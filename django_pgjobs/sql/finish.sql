-- Write the outcomes of many attempts in one statement: completed (with its
-- result), retryable (run again at run_at) or discarded, each with its error
-- appended. Lease-checked per job: a job whose lease was taken away (rescued,
-- cancelled, handed back) is not matched, and is missing from what this returns.
WITH publisher AS (
    -- The worker publishes these events itself once this commits (see events.py).
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
)
UPDATE pgjobs_job AS job
SET state = outcome.state,
    result = CASE WHEN outcome.state = 'completed' THEN outcome.result::jsonb ELSE job.result END,
    errors = CASE
        WHEN outcome.error IS NULL THEN job.errors
        ELSE job.errors || jsonb_build_array(outcome.error::jsonb)
    END,
    run_at = coalesce(outcome.run_at, job.run_at),
    finished_at = outcome.finished_at,
    lease = NULL
FROM unnest(
    %(ids)s::bigint[],
    %(leases)s::uuid[],
    %(states)s::text[],
    %(results)s::text[],
    %(errors)s::text[],
    %(run_ats)s::timestamptz[],
    %(finished_ats)s::timestamptz[]
) AS outcome (id, lease, state, result, error, run_at, finished_at), publisher
WHERE job.id = outcome.id
  AND job.state = 'executing'
  AND job.lease = outcome.lease
RETURNING job.*
