-- Lock the window of a rate limit until the transaction ends: its users take turns,
-- each seeing every start recorded before it. No row: ratelimits makes one first.
SELECT scope FROM pgjobs_ratewindow WHERE scope = %(scope)s FOR UPDATE
