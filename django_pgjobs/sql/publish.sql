-- Publish job events (%(events)s: a JSON array of them) on pgjobs_events in the caller's
-- transaction: delivered when it commits.
SELECT count(pg_notify('pgjobs_events', event::text))
FROM jsonb_array_elements(%(events)s::jsonb) AS event
