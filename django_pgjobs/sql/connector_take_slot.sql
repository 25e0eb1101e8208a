-- Take the first free concurrency slot of a connector for one job, in the
-- transaction that holds connector_lock_slots.sql (takers of a connector take
-- turns, so two never pick the same free slot). A slot is free when no row names
-- it, or its row names a job that no longer executes under that lease: finished,
-- or rescued from a worker that died. No session state: exact behind PgBouncer in
-- transaction mode, and a killed worker's slot comes back with its job.
WITH held AS (
    SELECT slot.slot
    FROM pgjobs_connectorslot AS slot
    JOIN pgjobs_job AS job
      ON job.id = slot.job_id AND job.lease = slot.lease AND job.state = 'executing'
    WHERE slot.connector_id = %(connector)s
),
free AS (
    SELECT n
    FROM generate_series(0, %(slots)s - 1) AS n
    WHERE n NOT IN (SELECT slot FROM held)
    ORDER BY n
    LIMIT 1
)
INSERT INTO pgjobs_connectorslot (connector_id, slot, job_id, lease)
SELECT %(connector)s, n, %(job)s, %(lease)s FROM free
ON CONFLICT (connector_id, slot) DO UPDATE SET job_id = excluded.job_id, lease = excluded.lease
RETURNING slot
