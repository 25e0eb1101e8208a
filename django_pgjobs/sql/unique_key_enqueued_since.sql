-- Whether a job of this queue holding this unique key was enqueued since %(since)s: a
-- unique_for key's holder within its window, whatever its state. Run on a connection
-- of its own (db.fetch_dicts_committed), it sees what is committed now, which a
-- REPEATABLE READ or SERIALIZABLE caller's snapshot may not.
SELECT EXISTS (
    SELECT FROM pgjobs_job
     WHERE queue = %(queue)s AND unique_key = %(key)s AND created_at >= %(since)s
) AS held
