-- Serialise enqueuers of one unique key in one queue until their transactions end.
-- With the caller's isolation level: above READ COMMITTED its snapshot may predate a
-- holder that took and released this lock (enqueue._insert_unique reads it afresh).
SELECT pg_advisory_xact_lock(hashtextextended('pgjobs:' || %(queue)s || ':' || %(key)s, 0)),
       current_setting('transaction_isolation') AS isolation
