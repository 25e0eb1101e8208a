-- A message the SMTP server accepted for an executing job, counted in its meta
-- (smtp_sent: {fingerprint: how many such messages were accepted}), so that a retry
-- of the job sends only the others (connectors/sent_mail.py). Lease-checked: a
-- worker that lost the job writes nothing. A meta, or a smtp_sent, that is not an
-- object (written around the API) is replaced, not fatal.
UPDATE pgjobs_job
SET meta = jsonb_set(
    CASE WHEN jsonb_typeof(meta) = 'object' THEN meta ELSE '{}' END,
    '{smtp_sent}',
    CASE WHEN jsonb_typeof(meta -> 'smtp_sent') = 'object' THEN meta -> 'smtp_sent' ELSE '{}' END
        || jsonb_build_object(%(fingerprint)s::text, %(times)s::int)
)
WHERE id = %(job)s
  AND lease = %(lease)s
  AND state = 'executing'
