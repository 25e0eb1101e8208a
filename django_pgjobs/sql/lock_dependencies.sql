-- Read the jobs a new job will depend on, holding them in their current state
-- until the new job and its edges commit: a dependency that finishes meanwhile
-- waits for us, and then its release sees our edges.
SELECT id, state
FROM pgjobs_job
WHERE id = ANY(%(ids)s)
FOR SHARE
