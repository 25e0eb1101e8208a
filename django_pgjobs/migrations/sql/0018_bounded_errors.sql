-- pgjobs_job_errors_bounded: a job keeps at most 20 error records (migration 0018).
--
-- Every failed attempt, rescue, reclaim and stranded cancel appends a record to
-- Job.errors, so a job retried without end (a large max_attempts, crashes that count
-- no attempt) grew without bound: 50,000 records made a 75 MB row, and a 75 MB admin
-- page. Oban keeps one record per failed attempt and bounds it with max_attempts;
-- here attempts are bounded at 2^31, so the column is bounded itself: the first
-- record (how it started failing) and the latest 19 (how it fails now) are kept, and
-- meta.errors_dropped counts those dropped between them. A trigger, not each
-- statement that appends: every writer is bound by it, a row written by hand is cut
-- back at its next append, and the WHEN clause keeps it off the row of a job with
-- fewer records (every job a worker finishes) at no more than a look at the array's
-- length. django_pgjobs/kept_errors.py reads any row by the same rule.

CREATE FUNCTION pgjobs_keep_errors() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total integer := jsonb_array_length(NEW.errors);
    dropped numeric;
BEGIN
    -- A count written by hand may be anything: a number is cut to a whole one (2.5,
    -- 1e-400 wrote 8.5 and a 400-digit decimal), within 0..1e15; else none so far.
    dropped := CASE
        WHEN jsonb_typeof(NEW.meta -> 'errors_dropped') = 'number'
        THEN least(greatest(trunc((NEW.meta ->> 'errors_dropped')::numeric), 0), 1e15)
        ELSE 0
    END;
    NEW.errors := jsonb_path_query_array(NEW.errors, '$[0, last - 18 to last]');
    NEW.meta := CASE WHEN jsonb_typeof(NEW.meta) = 'object' THEN NEW.meta ELSE '{}' END
        || jsonb_build_object('errors_dropped', least(dropped + total - 20, 1e15));
    RETURN NEW;
END
$$;

CREATE TRIGGER pgjobs_job_errors_bounded
    BEFORE UPDATE OF errors ON pgjobs_job
    FOR EACH ROW
    WHEN (jsonb_typeof(NEW.errors) = 'array' AND jsonb_array_length(NEW.errors) > 20)
    EXECUTE FUNCTION pgjobs_keep_errors();
