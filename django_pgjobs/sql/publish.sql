-- Publish job events on pgjobs_events in the caller's transaction: delivered when
-- it commits. %(payloads)s: notification payloads as events.payloads() builds
-- them (the format of django_pgjobs/migrations/sql/0002_database_triggers.sql).
SELECT count(pg_notify('pgjobs_events', payload))
FROM unnest(%(payloads)s::text[]) AS payload
