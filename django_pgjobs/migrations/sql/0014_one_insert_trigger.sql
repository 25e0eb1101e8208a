-- One AFTER INSERT trigger in place of two, with a short path for one row (migration 0014).
--
-- An INSERT used to fire pgjobs_job_inserted (wake-ups) and pgjobs_job_published
-- (events), each a grouping query over the transition table. Most INSERTs are of one
-- job (Job.enqueue, task.enqueue: the path of every view), and for one row those
-- queries were most of the triggers' cost: 46 us of server CPU per insert, and with
-- synchronous_commit on ~120 us of the statement's wall time (1,940 inserts/s ->
-- 2,520, one client, a prepared INSERT, on the 2-core box of bench/README.md). Now one
-- trigger, pgjobs_job_inserted, runs pgjobs_announce_inserted: it counts the rows;
-- one row sends its wake-up and its event straight from that row (+11 us over no
-- trigger at all); more rows go through the grouping queries of 0002, unchanged, so
-- notifications and payloads are what they were whatever the count.

DROP TRIGGER pgjobs_job_published ON pgjobs_job;
DROP TRIGGER pgjobs_job_inserted ON pgjobs_job;
DROP FUNCTION pgjobs_publish_inserted();
DROP FUNCTION pgjobs_notify_inserted();

-- Wakes the workers of the queues that got available jobs, then (unless
-- PGJOBS["EVENTS"] = False set pgjobs.events to off) publishes the new jobs' events:
-- payloads of at most 300 ids, grouped by task, queue, state and attempt (0002's
-- pgjobs_publish_events format).
CREATE FUNCTION pgjobs_announce_inserted() RETURNS trigger LANGUAGE plpgsql
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

CREATE TRIGGER pgjobs_job_inserted
    AFTER INSERT ON pgjobs_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_announce_inserted();
