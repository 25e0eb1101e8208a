-- Give back the concurrency slot a job took (connector_take_slot.sql) once its task
-- has run. Only while the row still names this job's lease: a slot another job took
-- over meanwhile (this one's lease lost, its job rescued) stays that job's. No lock
-- needed: a taker finds the slot free with or without the row.
DELETE FROM pgjobs_connectorslot
WHERE connector_id = %(connector)s AND slot = %(slot)s AND lease = %(lease)s
