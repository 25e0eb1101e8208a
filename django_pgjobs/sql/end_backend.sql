-- Backend %(pid)s started at %(started)s, if it still runs (the pid alone may be
-- another's by now): its state, and with %(terminate)s it is told to end
-- (pg_terminate_backend; a role may end its own sessions). No row once it is gone:
-- by then its transaction is over, rolled back or committed, and its locks released.
SELECT state,
       CASE WHEN %(terminate)s THEN pg_terminate_backend(pid) END AS signalled
FROM pg_stat_activity
WHERE pid = %(pid)s
  AND backend_start = %(started)s
