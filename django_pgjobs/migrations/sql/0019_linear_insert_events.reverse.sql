-- pgjobs_announce_inserted as 0014 made it.

CREATE OR REPLACE FUNCTION pgjobs_announce_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
DECLARE
    counted bigint;
    job record;
BEGIN
    SELECT count(*) INTO counted FROM inserted;
    IF counted = 1 THEN
        SELECT i.id, i.task, i.queue, i.state, i.attempt INTO job FROM inserted AS i;
        IF job.state = 'available' THEN
            PERFORM pg_notify('pgjobs_jobs', job.queue);
        END IF;
        IF current_setting('pgjobs.events', true) IS DISTINCT FROM 'off' THEN
            PERFORM pg_notify('pgjobs_events', json_build_object(
                'ids', ARRAY[job.id], 'task', job.task, 'queue', job.queue,
                'state', job.state, 'previous', NULL, 'attempt', job.attempt
            )::text);
        END IF;
        RETURN NULL;
    END IF;
    IF counted = 0 THEN  -- an INSERT ... SELECT that selected nothing
        RETURN NULL;
    END IF;

    PERFORM pg_notify('pgjobs_jobs', q.queue)
    FROM (SELECT DISTINCT queue COLLATE "C" AS queue FROM inserted WHERE state = 'available') AS q;
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    -- New jobs are grouped straight from the transition table, comparing names
    -- bytewise (COLLATE "C": equal names are equal bytes, and it is several times
    -- cheaper per row).
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'ids', batch.ids[first:first + 299], 'task', batch.task, 'queue', batch.queue,
        'state', batch.state, 'previous', NULL, 'attempt', batch.attempt
    )::text)
    FROM (
        SELECT task COLLATE "C" AS task, queue COLLATE "C" AS queue,
               state COLLATE "C" AS state, attempt,
               array_agg(id ORDER BY id) AS ids, min(id) AS first_id
        FROM inserted
        GROUP BY 1, 2, 3, 4
    ) AS batch,
    generate_series(1, cardinality(batch.ids), 300) AS first
    ORDER BY batch.first_id, first;
    RETURN NULL;
END
$$;
