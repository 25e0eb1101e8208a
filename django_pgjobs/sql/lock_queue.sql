-- Serialise claimers of one limited or blocking queue. Run in the claim's
-- transaction, as its own statement, so the claim that follows takes a fresh
-- snapshot and counts the executing jobs of whoever held the lock before us (and
-- ratelimits reads the queue's window after theirs).
SELECT name, paused, blocking, concurrency, rate_limit, rate_period, key_concurrency,
       key_rate_limit, key_rate_period
FROM pgjobs_queue
WHERE name = %(queue)s
FOR UPDATE
