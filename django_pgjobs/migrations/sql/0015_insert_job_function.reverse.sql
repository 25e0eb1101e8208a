-- Before 0015 no function inserted jobs: Job.enqueue sent the INSERT itself.

DROP FUNCTION pgjobs_insert_job(
    text, text, jsonb, jsonb, text, integer, integer, double precision, timestamptz,
    timestamptz, text, text, integer, jsonb
);
