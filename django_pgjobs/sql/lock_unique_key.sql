-- Serialise enqueuers of one unique key until their transactions end.
SELECT pg_advisory_xact_lock(hashtextextended('pgjobs:' || %(key)s, 0))
