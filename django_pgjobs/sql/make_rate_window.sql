-- The window of a rate limit that has none yet, empty (lock_rate_window.sql then locks it).
INSERT INTO pgjobs_ratewindow (scope, starts, expires_at)
VALUES (%(scope)s, '{}', statement_timestamp())
ON CONFLICT (scope) DO NOTHING
