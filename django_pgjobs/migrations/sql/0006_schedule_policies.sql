-- 0006_schedule_policies: schedules get a catch-up policy in place of misfire, and
-- the id of the last job they enqueued (issue 22).
--
-- misfire "catch_up" (fire the latest missed tick once) is catch_up "latest"; misfire
-- "skip" (fire only a tick at most MISFIRE_GRACE late) is catch_up "none".

UPDATE pgjobs_schedule SET catch_up = CASE misfire WHEN 'skip' THEN 'none' ELSE 'latest' END;

-- A scheduler writes last_job_id at every tick that enqueues a job, as it writes
-- last_fire_at and next_fire_at: like theirs, a change of it alone wakes no scheduler
-- (each one firing a tick would otherwise wake all the others for nothing).
CREATE OR REPLACE FUNCTION pgjobs_notify_schedule_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('pgjobs_schedules', OLD.id::text);
    ELSIF TG_OP = 'INSERT'
          OR NEW.next_fire_at IS NULL
          OR to_jsonb(OLD) - '{last_fire_at,next_fire_at,last_job_id,updated_at}'::text[]
             IS DISTINCT FROM to_jsonb(NEW) - '{last_fire_at,next_fire_at,last_job_id,updated_at}'::text[] THEN
        PERFORM pg_notify('pgjobs_schedules', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
