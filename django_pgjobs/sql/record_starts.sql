-- Record %(count)s starts at %(at)s (rate_window.sql's clock) in the window of a rate
-- limit, dropping those that left it, and any after %(at)s (written by SQL: no start
-- is). Run in the transaction that locked the window.
INSERT INTO pgjobs_ratewindow AS window_row (scope, starts, expires_at)
VALUES (
    %(scope)s,
    array_fill(%(at)s::timestamptz, ARRAY[%(count)s::integer]),
    %(at)s::timestamptz + make_interval(secs => %(period)s)
)
ON CONFLICT (scope) DO UPDATE
SET starts = array(
        SELECT started FROM unnest(window_row.starts) AS started
        WHERE started > %(at)s::timestamptz - make_interval(secs => %(period)s)
          AND started <= %(at)s::timestamptz
        ORDER BY started
    ) || EXCLUDED.starts,
    expires_at = EXCLUDED.expires_at
