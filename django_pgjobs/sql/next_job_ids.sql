-- %(count)s new job ids from the table's sequence, for a COPY (copy_jobs.sql),
-- as one array: one row to read, not one per job.
SELECT array_agg(nextval(pg_get_serial_sequence('pgjobs_job', 'id'))) AS ids
FROM generate_series(1, %(count)s)
