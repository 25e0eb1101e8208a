-- Undoes sql/0020_few_edges_per_job.sql: ANALYZE's own estimates again.

ALTER TABLE pgjobs_jobdependency
    ALTER COLUMN depends_on_id RESET (n_distinct),
    ALTER COLUMN job_id RESET (n_distinct);

ANALYZE pgjobs_jobdependency;
