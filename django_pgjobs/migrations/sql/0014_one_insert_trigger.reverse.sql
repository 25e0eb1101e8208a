-- The two AFTER INSERT triggers of 0002 and their functions, copied unchanged.

DROP TRIGGER pgjobs_job_inserted ON pgjobs_job;
DROP FUNCTION pgjobs_announce_inserted();

CREATE FUNCTION pgjobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
BEGIN
    PERFORM pg_notify('pgjobs_jobs', q.queue)
    FROM (SELECT DISTINCT queue COLLATE "C" AS queue FROM inserted WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER pgjobs_job_inserted
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_notify_inserted();

-- New jobs are grouped straight from the transition table, comparing names bytewise
-- (COLLATE "C": equal names are equal bytes, and it is several times cheaper per row).
CREATE FUNCTION pgjobs_publish_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
BEGIN
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    -- The payloads of pgjobs_publish_events, at most 300 ids each.
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

CREATE TRIGGER pgjobs_job_published
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_publish_inserted();
