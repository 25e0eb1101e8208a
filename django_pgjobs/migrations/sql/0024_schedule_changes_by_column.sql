-- pgjobs_notify_schedule_changed compares the schedule's columns one by one (migration
-- 0024), where it compared the whole row converted to jsonb twice.
--
-- Each UPDATE of a schedule runs it, and a scheduler writes one at every tick
-- (last_fire_at, next_fire_at, last_job_id): to_jsonb(OLD) and to_jsonb(NEW) copied
-- the whole row, arguments and all, into two jsonb values, ~0.9 s per 100 MB of args
-- written by SQL, on every tick of that schedule. Compared column by column, no row is
-- copied and no value converted: a tick's UPDATE of a schedule with 50 MB of args took
-- 0.41 s, now 0.16 s (args that compress, as repeat('a', ...)), and 1.13 s, now 0.27 s
-- (args that don't). What is left is reading both values of args to compare them,
-- which any comparison of the value does (tests/test_schedule_trigger.py).
--
-- Same semantics: every column but those a scheduler writes (last_fire_at,
-- next_fire_at, last_job_id) and updated_at, named here as the jsonb subtraction
-- named the excluded ones; tests/test_schedule_trigger.py fails when a column of
-- models.Schedule is in neither list, and checks which changes notify.

CREATE OR REPLACE FUNCTION pgjobs_notify_schedule_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('pgjobs_schedules', OLD.id::text);
    ELSIF TG_OP = 'INSERT'
          OR NEW.next_fire_at IS NULL
          OR (OLD.id, OLD.name, OLD.cron, OLD.timezone, OLD.task, OLD.args, OLD.kwargs,
              OLD.queue, OLD.priority, OLD.enabled, OLD.created_at, OLD.catch_up,
              OLD.catch_up_limit, OLD.catch_up_window, OLD.jitter, OLD.overlap)
             IS DISTINCT FROM
             (NEW.id, NEW.name, NEW.cron, NEW.timezone, NEW.task, NEW.args, NEW.kwargs,
              NEW.queue, NEW.priority, NEW.enabled, NEW.created_at, NEW.catch_up,
              NEW.catch_up_limit, NEW.catch_up_window, NEW.jitter, NEW.overlap) THEN
        PERFORM pg_notify('pgjobs_schedules', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
