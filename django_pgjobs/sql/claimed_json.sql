-- The JSON columns of claimed job rows, bounded: shared by the claim, rescue and reclaim
-- statements: each has "-- include: claimed_json" after job.id in its RETURNING list
-- (db.statement puts this file there, trailing comma and all). Not a statement of its own.
-- A JSON value over %(most)s bytes stored is not sent: a row written by SQL may hold
-- 255 MB in each (loaded.py). Nor is one of args, kwargs, errors, result over
-- %(inline)s: the job's thread reads it when it runs (loaded.load_deferred), so that
-- prefetched jobs hold no large values. "oversized" gives the stored sizes of a job
-- with a value not sent, in loaded.COLUMNS order; a job without one (most) costs the
-- claim nothing more. pg_column_size reads them without detoasting.
CASE WHEN pg_column_size(job.args) <= %(inline)s THEN job.args END AS args,
CASE WHEN pg_column_size(job.kwargs) <= %(inline)s THEN job.kwargs END AS kwargs,
CASE WHEN pg_column_size(job.meta) <= %(most)s THEN job.meta END AS meta,
CASE WHEN pg_column_size(job.errors) <= %(inline)s THEN job.errors END AS errors,
CASE WHEN pg_column_size(job.result) <= %(inline)s THEN job.result END AS result,
CASE
    WHEN greatest(
        pg_column_size(job.args), pg_column_size(job.kwargs), pg_column_size(job.meta),
        pg_column_size(job.errors), pg_column_size(job.result)
    ) > %(inline)s
    THEN ARRAY[
        pg_column_size(job.args), pg_column_size(job.kwargs), pg_column_size(job.meta),
        pg_column_size(job.errors), pg_column_size(job.result)
    ]
END AS oversized,
