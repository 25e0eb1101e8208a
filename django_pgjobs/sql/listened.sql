-- Whether any session listens for job events: each holds the listeners' advisory
-- lock (%(lock)s, %(key)s: events.LISTENERS_LOCK), shared, for as long as it listens
-- (events.hold_listeners_lock), so the lock is ours to take exclusively only if none
-- does. Taken and let go in this one statement, so it is never held past it (not
-- even behind PgBouncer in transaction mode); CASE, because AND may call the unlock
-- first.
SELECT CASE
    WHEN pg_try_advisory_lock(%(lock)s, %(key)s) THEN NOT pg_advisory_unlock(%(lock)s, %(key)s)
    ELSE true
END AS listened
