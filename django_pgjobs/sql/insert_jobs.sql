-- Insert many jobs in one statement. %(rows)s is a JSON array with one object
-- per job, keyed by column name (every column but id): each row takes all the
-- table's columns from it, so this follows the model without naming them. Ids
-- come from the table's sequence in array order; the caller sorts RETURNING.
INSERT INTO pgjobs_job
SELECT job.*
FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS item (value, position),
     LATERAL jsonb_populate_record(
         NULL::pgjobs_job,
         item.value || jsonb_build_object(
             'id', nextval(pg_get_serial_sequence('pgjobs_job', 'id'))
         )
     ) AS job
ORDER BY item.position
RETURNING id
