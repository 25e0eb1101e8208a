-- Whether any session listens for job events: each holds the listeners' advisory
-- lock, shared, for as long as it listens (events.hold_listeners_lock), so the lock
-- is ours to take exclusively only if none does. Taken and let go in this one
-- statement, so it is never held past it (not even behind PgBouncer in transaction
-- mode); CASE, because AND may call the unlock first. 1886023522 is 'pjob' in ASCII;
-- 1, its events.
SELECT CASE
    WHEN pg_try_advisory_lock(1886023522, 1) THEN NOT pg_advisory_unlock(1886023522, 1)
    ELSE true
END AS listened
