-- Publish job events on pgjobs_events in a transaction of their own, run right
-- after the change they describe committed. Its commit doesn't wait for the
-- disk: a notifying commit holds PostgreSQL's cluster-wide NOTIFY lock until it
-- returns, and notifications aren't durable anyway, so there is nothing to wait
-- for. %(payloads)s: as in publish.sql.
WITH no_wait AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT count(pg_notify('pgjobs_events', payload))
FROM unnest(%(payloads)s::text[]) AS payload, no_wait
