-- Give back the jobs a claim of worker %(worker_id)s took but whose answer never came
-- (the connection broke as the claim committed: a server crash or restart, a
-- failover): executing under its id, yet not among the jobs it holds (%(held)s:
-- those it runs, and those that ran but whose outcome it could not write, which
-- reclaim_forgotten returns, counted). They never started, so as a hand-back does:
-- available again at their place in the queue, the attempt the claim counted given
-- back. The worker's loop runs this before its next claim, so no claim of its own is
-- under way: a job of its that is not in %(held)s is no job it is about to start.
-- A claim whose backend still runs (the client gave up on a partition) is not seen
-- here: its rows are locked, and still available. The loop first ends that backend
-- and waits until it is gone (lostclaims.py), or, behind a pooler, runs this again
-- every second for a while.
-- Without it such jobs waited for a rescue pass more than WORKER_STALE_AFTER later,
-- and lost an attempt there.
UPDATE pgjobs_job AS job
SET state = 'available',
    attempt = greatest(job.attempt - 1, 0),
    lease = NULL,
    worker_id = NULL
FROM (
    SELECT id
    FROM pgjobs_job
    WHERE state = 'executing'
      AND worker_id = %(worker_id)s
      AND NOT (id = ANY(%(held)s::bigint[]))
    FOR UPDATE SKIP LOCKED
) AS unheld
WHERE job.id = unheld.id
RETURNING job.id
