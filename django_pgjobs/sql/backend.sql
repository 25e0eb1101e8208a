-- The server backend serving this connection, as pg_stat_activity knows it: its pid
-- and start tell it from any later backend given the same pid (lostclaims.py).
SELECT pid, backend_start AS started
FROM pg_stat_activity
WHERE pid = pg_backend_pid()
