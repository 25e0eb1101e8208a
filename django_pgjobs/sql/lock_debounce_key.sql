-- Serialise enqueuers of one debounce key in one queue until their transactions end.
SELECT pg_advisory_xact_lock(hashtextextended('pgjobs-debounce:' || %(queue)s || ':' || %(key)s, 0))
