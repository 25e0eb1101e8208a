-- Send a notification inside the caller's transaction (delivered on commit).
SELECT pg_notify(%(channel)s, %(payload)s)
