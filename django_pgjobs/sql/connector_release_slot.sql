-- Give back a slot taken by connector_take_slot.sql on this same connection.
SELECT pg_advisory_unlock(%(key)s) AS released
