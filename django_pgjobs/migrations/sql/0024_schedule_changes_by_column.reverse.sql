-- 0024_schedule_changes_by_column, backwards: the function as 0006_schedule_policies made it.

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
