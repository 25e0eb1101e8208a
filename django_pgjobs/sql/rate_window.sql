-- What a rate limit's window holds now, by the database's clock: how many starts lie
-- within the last %(period)s seconds, and the one that must leave it before the
-- limit of %(limit)s allows a start again once the window is full. Run after the
-- lock its users take turns on (lock_queue.sql, lock_rate_window.sql), as a statement
-- of its own: its clock then reads later than every start recorded before it, so a
-- start after it was written by SQL ('infinity', a year ahead) and is none: counted,
-- it kept the window full until then, and the limited queue or connector ran nothing.
SELECT statement_timestamp() AS now,
       count(started) AS used,
       (array_agg(started ORDER BY started))[greatest(1, count(started) - %(limit)s + 1)]
           AS leaves_first
FROM pgjobs_ratewindow AS window_row
CROSS JOIN LATERAL unnest(window_row.starts) AS started
WHERE window_row.scope = %(scope)s
  AND started > statement_timestamp() - make_interval(secs => %(period)s)
  AND started <= statement_timestamp()
