-- Put an executing job back until %(until)s without counting its attempt: a snooze
-- (the task raised Snooze, or its connector is busy or throttled). Lease-checked: a
-- worker that lost the job changes nothing. The job's meta keeps how many times it
-- was snoozed and the last snooze, for its page in the admin.
UPDATE pgjobs_job
SET state = CASE WHEN %(until)s > %(now)s THEN 'scheduled' ELSE 'available' END,
    attempt = attempt - 1,
    run_at = %(until)s,
    lease = NULL,
    worker_id = NULL,
    meta = CASE WHEN jsonb_typeof(meta) = 'object' THEN meta ELSE '{}' END
        || jsonb_build_object('snoozed', jsonb_build_object(
            'count', 1 + CASE WHEN jsonb_typeof(meta #> '{snoozed,count}') = 'number'
                              THEN least((meta #>> '{snoozed,count}')::numeric, 1e15)
                              ELSE 0 END,
            'at', %(now)s::timestamptz,
            'until', %(until)s::timestamptz,
            'reason', %(reason)s::text))
WHERE id = %(id)s AND state = 'executing' AND lease = %(lease)s
RETURNING state, run_at, attempt, meta
