-- Publish job events (%(events)s: a JSON array of them) on pgjobs_events in the caller's
-- transaction: delivered when it commits, many per notification (migration 0010).
SELECT pgjobs_publish_events(%(events)s::jsonb)
