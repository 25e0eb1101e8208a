-- Back to before migration 0018: error records unbounded.
DROP TRIGGER pgjobs_job_errors_bounded ON pgjobs_job;
DROP FUNCTION pgjobs_keep_errors();
