-- Until the transaction ends, be the only one taking slots of this connector
-- (connector_take_slot.sql). Transaction-level: nothing outlives the transaction,
-- so it holds behind PgBouncer in transaction mode.
SELECT pg_advisory_xact_lock(%(key)s)
