"""The insert triggers group new jobs without a detour, and the job triggers never JIT-compile.

An ``enqueue_many`` of 10,000 jobs spent ~30 ms of PostgreSQL's time in its two
statement triggers, about a third of what the insert itself cost:

- ``pgjobs_publish_inserted`` copied the transition table into six arrays for
  ``pgjobs_publish_events``, which unnested them again to group them. It now
  groups ``inserted`` itself, into the same payloads.
- Both grouped and de-duplicated task and queue names in the database's
  collation; equal names are equal bytes, so they compare bytewise now
  (``COLLATE "C"``), which is several times cheaper per row.
- A trigger's queries are planned with a guess of the transition table's size.
  Grouped straight from it, the publishing query was costed above
  ``jit_above_cost``, and PostgreSQL spent 240 ms compiling it with LLVM
  for a query that runs in 10. The job triggers' functions run with
  ``jit = off``: they are small queries over rows already in memory.
"""

import re
from importlib import import_module

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION pgjobs_publish_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
BEGIN
    IF current_setting('pgjobs.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    -- The payloads of pgjobs_publish_events (0010), at most 300 ids each.
    PERFORM pg_notify('pgjobs_events', json_build_object(
        'ids', batch.ids[first:first + 299], 'task', batch.task, 'queue', batch.queue,
        'state', batch.state, 'previous', NULL, 'attempt', batch.attempt
    )::text)
    FROM (
        SELECT task COLLATE "C" AS task, queue COLLATE "C" AS queue,
               state COLLATE "C" AS state, attempt,
               array_agg(id ORDER BY id) AS ids, min(id) AS first_id
        FROM inserted
        GROUP BY 1, 2, 3, 4
    ) AS batch,
    generate_series(1, cardinality(batch.ids), 300) AS first
    ORDER BY batch.first_id, first;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgjobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql
SET jit = off AS $$
BEGIN
    PERFORM pg_notify('pgjobs_jobs', q.queue)
    FROM (SELECT DISTINCT queue COLLATE "C" AS queue FROM inserted WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;

ALTER FUNCTION pgjobs_job_transitioned() SET jit = off;
"""


def _function(migration: str, name: str) -> str:
    """The CREATE FUNCTION statement of ``name`` in an earlier migration's FORWARD."""
    forward = import_module(f"tests.migrations_before_squash.{migration}").FORWARD
    found = re.search(rf"CREATE (?:OR REPLACE )?FUNCTION {name}\(\).*?\n\$\$;\n", forward, re.S)
    if found is None:
        raise LookupError(f"{name} is not created in {migration}")
    return found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


# The functions as 0002_triggers and 0010_event_batches made them.
REVERSE = (
    "ALTER FUNCTION pgjobs_job_transitioned() RESET jit;\n\n"
    + _function("0002_triggers", "pgjobs_notify_inserted")
    + "\n"
    + _function("0010_event_batches", "pgjobs_publish_inserted")
)


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0013_cheaper_transition_trigger")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
