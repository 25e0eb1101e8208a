-- A service answered a connector "not now" with Retry-After: every job using the
-- connector waits until then (connectors/runtime.py). By the database's clock, so
-- that workers on hosts whose clocks differ wait for the same instant; a later
-- deadline already set is kept. From this statement, not now(): that is when the
-- transaction began, and a task's own transaction may have begun long before.
UPDATE pgjobs_connector
SET throttled_until = greatest(
    throttled_until, statement_timestamp() + make_interval(secs => %(seconds)s)
)
WHERE name = %(name)s
