-- The events of a many-row INSERT in linear time (migration 0019).
--
-- pgjobs_announce_inserted (0014) sorted its notifications by each group's first
-- id, and PostgreSQL makes a volatile call's argument (pg_notify's payload) after
-- the sort: every row of the sort carried what the payload is cut from, the
-- group's whole array of ids. A batch of n jobs sorted n/300 copies of an
-- n-element array: 50,000 jobs (Job.enqueue_many, one COPY) wrote 65 MB of temp
-- files, 200,000 jobs 1.1 GB and took 5.4 s, a million would have written about
-- 27 GB. The payloads are now made in a subquery before its ORDER BY, as
-- pgjobs_publish_events (0002) makes them: the sort carries each payload of at
-- most 300 ids. Same notifications, same order, same payloads. One job's insert
-- (the short path) is unchanged.

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
    -- cheaper per row). Each payload is made in the subquery, before its ORDER BY:
    -- sorted after it, every 300-id chunk carried its group's whole array of ids.
    PERFORM pg_notify('pgjobs_events', payloads.payload)
    FROM (
        SELECT json_build_object(
            'ids', batch.ids[first:first + 299], 'task', batch.task, 'queue', batch.queue,
            'state', batch.state, 'previous', NULL, 'attempt', batch.attempt
        )::text AS payload
        FROM (
            SELECT task COLLATE "C" AS task, queue COLLATE "C" AS queue,
                   state COLLATE "C" AS state, attempt,
                   array_agg(id ORDER BY id) AS ids, min(id) AS first_id
            FROM inserted
            GROUP BY 1, 2, 3, 4
        ) AS batch,
        generate_series(1, cardinality(batch.ids), 300) AS first
        ORDER BY batch.first_id, first
    ) AS payloads;
    RETURN NULL;
END
$$;
