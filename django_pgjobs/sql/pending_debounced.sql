-- The pending job (not yet claimed) of a debounce key in a queue, locked for the
-- enqueuer that replaces its arguments (enqueue._insert_debounced). A worker's claim
-- skips it while it is locked; one that claimed it first made it executing, and
-- then it is not pending. Reads pgjobs_job_debounce_pending (migration 0009). Its id
-- only: the enqueuer reads the row with its large values left out (loaded.holder).
SELECT id
FROM pgjobs_job
WHERE queue = %(queue)s
  AND (meta -> 'debounce' ->> 'key') = %(key)s
  AND state IN ('scheduled', 'available')
ORDER BY id
FOR UPDATE
