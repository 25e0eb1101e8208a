-- Take one free concurrency slot of a connector: each slot is a session-level
-- advisory lock, so the limit holds across every worker process and host.
-- Released by connector_release_slot.sql, or by PostgreSQL when the connection
-- ends, so a crashed worker never leaks a slot. LIMIT 1 stops at the first
-- lock taken: the filter runs row by row.
SELECT slot
FROM generate_series(0, %(slots)s - 1) AS slot
WHERE pg_try_advisory_lock(%(base)s + slot)
LIMIT 1
