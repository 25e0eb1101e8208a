-- Publish job events (%(events)s: a JSON array of them) on pgjobs_events in a transaction of
-- their own, run right after the change they describe committed. Its commit
-- doesn't wait for the disk: a notifying commit holds PostgreSQL's
-- cluster-wide NOTIFY lock until it returns, and notifications aren't durable
-- anyway, so there is nothing to wait for.
WITH no_wait AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT pgjobs_publish_events(%(events)s::jsonb)
FROM no_wait
