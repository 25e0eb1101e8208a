-- Undoes 0002_database_triggers.sql: its triggers, then the functions they ran.

DROP TRIGGER pgjobs_schedule_changed ON pgjobs_schedule;
DROP TRIGGER pgjobs_schedule_replan ON pgjobs_schedule;
DROP TRIGGER pgjobs_job_transition ON pgjobs_job;
DROP TRIGGER pgjobs_job_published ON pgjobs_job;
DROP TRIGGER pgjobs_queue_changed ON pgjobs_queue;
DROP TRIGGER pgjobs_job_made_available ON pgjobs_job;
DROP TRIGGER pgjobs_job_inserted ON pgjobs_job;

DROP FUNCTION pgjobs_notify_schedule_changed();
DROP FUNCTION pgjobs_schedule_replan();
DROP FUNCTION pgjobs_job_transitioned();
DROP FUNCTION pgjobs_publish_inserted();
DROP FUNCTION pgjobs_publish_events(bigint[], text[], text[], text[], text[], integer[]);
DROP FUNCTION pgjobs_notify_queue_changed();
DROP FUNCTION pgjobs_notify_queue();
DROP FUNCTION pgjobs_notify_inserted();
