-- Set each of %(names)s to its value in %(values)s for the rest of the current
-- transaction (set_config's is_local), returning its value before (``before``):
-- db.local_settings runs this again with those to put them back.
SELECT name, current_setting(name) AS before, set_config(name, value, true)
  FROM unnest(%(names)s::text[], %(values)s::text[]) AS setting(name, value)
