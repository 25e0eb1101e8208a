-- The caller's transaction isolation level ('read committed', 'repeatable read',
-- 'serializable'): a unique key's holder committed after a REPEATABLE READ or
-- SERIALIZABLE snapshot stays out of its sight (enqueue.UniqueKeyConflict says so).
SELECT current_setting('transaction_isolation') AS isolation
