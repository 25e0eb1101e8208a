-- Insert one new job: the path of every Job.enqueue / task.enqueue. The INSERT is in
-- pgjobs_insert_job (migration 0015), whose plan PostgreSQL keeps for the session:
-- only this SELECT is parsed and planned per job. The job must have the values every
-- new job starts with in the columns the function fills itself (enqueue.py checks).
SELECT pgjobs_insert_job(
    %(task)s, %(queue)s, %(args)s, %(kwargs)s, %(state)s, %(priority)s,
    %(max_attempts)s, %(timeout)s, %(run_at)s, %(created_at)s, %(unique_key)s,
    %(connector)s, %(pending_dependencies)s, %(meta)s
) AS id
