-- The dashboard's chart of [%(start)s, %(end)s): per minute (``minute``, counted
-- from 0) the jobs completed and whether that is an estimate; and one more row
-- (``minute`` null) with the failed attempts' times as ``failures``: a JSON list of
-- [weight, approximate, [[time, ...], ...]] (a list of times per job), each time
-- standing for ``weight`` failures.
--
-- Finished jobs are read from pgjobs_job_finished per slice of %(slice)s seconds: the
-- first %(head)s of the slice and, when there are that many, its last %(tail)s (two
-- descents that stop there), so the cost is bounded by the number of slices whatever
-- the traffic. Counting every job of the hour read every one: 41,000 rows at 11
-- jobs/s; at 1,000 jobs/s it would be 3.6 million. A slice with fewer than
-- %(head)s + %(tail)s jobs has been read whole and is counted exactly. A fuller one is
-- estimated, and its minute marked approximate: the jobs read at its two ends
-- finished at a rate (read - 2.5 over the time the two groups span), taken to hold in
-- the gap between them; each job read stands for ``weight`` of the slice's. Read - 3
-- would be the unbiased rate of jobs finishing independently, read - 2 the exact one
-- of evenly spaced jobs: in between, 3 to 4 percent off either way. Reading both ends
-- rather than only the first jobs, a burst at the start of a slice (a schedule firing
-- on the minute) is not taken to last the whole slice: simulated, 300 jobs in 2 s on
-- top of 11/s come out 20 percent over on average rather than 7 times; a burst in the
-- middle of a slice, which neither end sees, is missed.
-- docs/admin.md has the errors.
--
-- Failed attempts are the times %(failure_times)s of the error histories (Job.errors)
-- of the finished jobs read that ever failed (weighted as their slice), of the jobs
-- retrying since %(start)s (a retry is due after the failure that caused it) and of
-- the jobs executing an attempt past their first that started since then (it
-- started after the previous one failed). A failed job that an operator put back in
-- the queue is counted again once it runs: while it waits, it is left out. The
-- caller reads the times (those that are no time are skipped, never an error: no
-- stored row may break the dashboard): jsonpath's .datetime() took 10 us a time.
WITH
slice AS (
    SELECT slice.lo,
           head.read + coalesce(tail.read, 0) AS read,
           head.completed + coalesce(tail.completed, 0) AS completed,
           nullif(concat_ws(',', head.failures, tail.failures), '') AS failures,
           head.first,
           head.last AS head_last,
           tail.first AS tail_first,
           tail.last AS final
    -- Numbered rather than a series of times, which the planner takes for 1,000
    -- rows whatever its length.
    FROM generate_series(0, %(slices)s - 1) AS n,
         LATERAL (SELECT %(start)s::timestamptz + n * make_interval(secs => %(slice)s)) AS slice (lo),
    -- Each end aggregated as it is read: sorting and grouping the rows read afterwards
    -- cost more than reading them (and a window function to rank them, half as much
    -- again).
    LATERAL (
        SELECT count(*) AS read,
               count(*) FILTER (WHERE job.state = 'completed') AS completed,
               string_agg(job.failures::text, ',') AS failures,
               min(job.finished_at) AS first,
               max(job.finished_at) AS last,
               array_agg(job.id) AS ids
        FROM (
            SELECT finished.id,
                   finished.finished_at,
                   finished.state,
                   -- Only a job that ever failed holds failures.
                   CASE WHEN (finished.attempt >= 2 OR finished.state = 'discarded')
                             AND jsonb_typeof(finished.errors) = 'array'
                        THEN jsonb_path_query_array(finished.errors,
                                                    %(failure_times)s::jsonpath, '{}', true)
                   END AS failures
            FROM pgjobs_job AS finished
            WHERE finished.state IN ('completed', 'discarded', 'cancelled')
              AND finished.finished_at >= slice.lo
              AND finished.finished_at < slice.lo + make_interval(secs => %(slice)s)
            ORDER BY finished.finished_at
            LIMIT %(head)s
        ) AS job
    ) AS head
    -- Only when the head is full, and without the head's jobs, left out before the
    -- limit: jobs that finished at one instant (a bulk cancel) tie, and a descending
    -- read may return some of the head's among its last, which left the slice short
    -- of %(head)s + %(tail)s read and counted exactly. Fewer than %(tail)s read here
    -- means every job of the slice has been read.
    LEFT JOIN LATERAL (
        SELECT count(*) AS read,
               count(*) FILTER (WHERE job.state = 'completed') AS completed,
               string_agg(job.failures::text, ',') AS failures,
               min(job.finished_at) AS first,
               max(job.finished_at) AS last
        FROM (
            SELECT finished.id,
                   finished.finished_at,
                   finished.state,
                   -- Only a job that ever failed holds failures.
                   CASE WHEN (finished.attempt >= 2 OR finished.state = 'discarded')
                             AND jsonb_typeof(finished.errors) = 'array'
                        THEN jsonb_path_query_array(finished.errors,
                                                    %(failure_times)s::jsonpath, '{}', true)
                   END AS failures
            FROM pgjobs_job AS finished
            WHERE finished.state IN ('completed', 'discarded', 'cancelled')
              AND finished.finished_at >= slice.lo
              AND finished.finished_at < slice.lo + make_interval(secs => %(slice)s)
              AND head.read >= %(head)s
              AND finished.id <> ALL (head.ids)
            ORDER BY finished.finished_at DESC
            LIMIT %(tail)s
        ) AS job
    ) AS tail ON true
    WHERE head.read > 0
),
weighed AS (
    SELECT slice.*,
           slice.read >= %(head)s + %(tail)s AS approximate,
           CASE WHEN slice.read < %(head)s + %(tail)s THEN 1.0
                ELSE (slice.read + coalesce(
                          (slice.read - 2.5)
                          * extract(epoch FROM slice.tail_first - slice.head_last)
                          / nullif(extract(epoch FROM slice.head_last - slice.first)
                                   + extract(epoch FROM slice.final - slice.tail_first), 0),
                          0))
                     / slice.read
           END AS weight
    FROM slice
),
unfinished (failures) AS (
    SELECT jsonb_path_query_array(retrying.errors, %(failure_times)s::jsonpath, '{}', true)
    FROM pgjobs_job AS retrying
    WHERE retrying.state = 'retryable'
      -- Not an index condition: on pgjobs_job_claim (by queue, priority, run_at) it
      -- read the row of every claimable job; pgjobs_job_state_queue_rest holds the
      -- retryable ones alone.
      AND (retrying.run_at >= %(start)s) IS NOT FALSE
      AND jsonb_typeof(retrying.errors) = 'array'
    UNION ALL
    SELECT jsonb_path_query_array(running.errors, %(failure_times)s::jsonpath, '{}', true)
    FROM pgjobs_job AS running
    WHERE running.state = 'executing'
      AND running.attempted_at >= %(start)s
      AND running.attempt >= 2
      AND jsonb_typeof(running.errors) = 'array'
),
failures AS (
    SELECT weighed.weight, weighed.approximate, weighed.failures
    FROM weighed
    WHERE weighed.failures IS NOT NULL
    UNION ALL
    SELECT 1.0, false, string_agg(unfinished.failures::text, ',')
    FROM unfinished
)
SELECT floor(extract(epoch FROM weighed.lo - %(start)s::timestamptz) / 60)::int AS minute,
       sum(weighed.completed * weighed.weight) AS completed,
       bool_or(weighed.approximate) AS approximate,
       NULL AS failures
FROM weighed
GROUP BY 1
UNION ALL
-- JSON made as text: jsonb_agg cost a third more than the reading it aggregates.
SELECT NULL, NULL, NULL,
       '[' || string_agg('[' || weight || ',' || approximate || ',[' || failures || ']]', ',')
       || ']'
FROM failures
WHERE failures IS NOT NULL
