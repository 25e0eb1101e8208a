-- The JSON columns of claimed job rows, bounded: shared by the claim, rescue and reclaim
-- statements: each has "-- include: claimed_json" after job.id in its RETURNING list
-- (db.statement puts this file there, trailing comma and all). Not a statement of its own.
-- A JSON value over %(most)s bytes stored is not sent: a row written by SQL may hold
-- 255 MB in each (loaded.py). "oversized" gives the stored sizes of a job with one,
-- in loaded.COLUMNS order. pg_column_size reads them without detoasting.
CASE WHEN pg_column_size(job.args) <= %(most)s THEN job.args END AS args,
CASE WHEN pg_column_size(job.kwargs) <= %(most)s THEN job.kwargs END AS kwargs,
CASE WHEN pg_column_size(job.meta) <= %(most)s THEN job.meta END AS meta,
CASE WHEN pg_column_size(job.errors) <= %(most)s THEN job.errors END AS errors,
CASE WHEN pg_column_size(job.result) <= %(most)s THEN job.result END AS result,
CASE
    WHEN greatest(
        pg_column_size(job.args), pg_column_size(job.kwargs), pg_column_size(job.meta),
        pg_column_size(job.errors), pg_column_size(job.result)
    ) > %(most)s
    THEN ARRAY[
        pg_column_size(job.args), pg_column_size(job.kwargs), pg_column_size(job.meta),
        pg_column_size(job.errors), pg_column_size(job.result)
    ]
END AS oversized,
