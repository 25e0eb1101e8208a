-- What a worker needs to know of its queues before claiming; a queue without a
-- row runs with defaults (not paused, no limit). A limited queue (blocking, or with
-- a concurrency, rate or per-key limit) is claimed through lock_queue.sql.
SELECT name, paused, priority,
       blocking OR concurrency IS NOT NULL OR rate_limit IS NOT NULL
       OR key_concurrency IS NOT NULL OR key_rate_limit IS NOT NULL AS limited
FROM pgjobs_queue
WHERE name = ANY(%(queues)s)
