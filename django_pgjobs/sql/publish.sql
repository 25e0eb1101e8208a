-- Publish job events (JSON payloads) on pgjobs_events in the caller's
-- transaction: delivered when it commits.
SELECT count(pg_notify('pgjobs_events', payload))
FROM unnest(%(payloads)s::text[]) AS payload
