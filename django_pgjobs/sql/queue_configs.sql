-- What a worker needs to know of its queues before claiming; a queue without a
-- row runs with defaults (not paused, no limit).
SELECT name, paused, blocking, concurrency, priority
FROM pgjobs_queue
WHERE name = ANY(%(queues)s)
