-- Serialise enqueuers of one unique key in one queue until their transactions end.
SELECT pg_advisory_xact_lock(hashtextextended('pgjobs:' || %(queue)s || ':' || %(key)s, 0))
