-- 0006_schedule_policies, backwards: misfire from catch_up ("all" had no equal: it
-- becomes "catch_up", the nearest), and the function as 0002_database_triggers made it.

UPDATE pgjobs_schedule SET misfire = CASE catch_up WHEN 'none' THEN 'skip' ELSE 'catch_up' END;

CREATE OR REPLACE FUNCTION pgjobs_notify_schedule_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('pgjobs_schedules', OLD.id::text);
    ELSIF TG_OP = 'INSERT'
          OR NEW.next_fire_at IS NULL
          OR to_jsonb(OLD) - '{last_fire_at,next_fire_at,updated_at}'::text[]
             IS DISTINCT FROM to_jsonb(NEW) - '{last_fire_at,next_fire_at,updated_at}'::text[] THEN
        PERFORM pg_notify('pgjobs_schedules', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
