-- %(count)s new job ids from the table's sequence, for a COPY (copy_jobs.sql),
-- as one array: one row to read, not one per job. The sequence is looked up
-- once: pg_get_serial_sequence per id was most of the statement's time.
WITH sequence AS MATERIALIZED (
    SELECT pg_get_serial_sequence('pgjobs_job', 'id')::regclass AS name
)
SELECT array_agg(nextval(sequence.name)) AS ids
FROM sequence, generate_series(1, %(count)s)
