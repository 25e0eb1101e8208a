"""The job-update trigger costs a worker's claims and outcomes under a third of what it did.

``pgjobs_job_transitioned`` (0011) ran on every claim and every outcome a
worker writes, and took 8.4 microseconds per job of them (EXPLAIN ANALYZE of
100-job claims and completions, against 2.4 now): a quarter of PostgreSQL's own
work for those UPDATEs. Same checks and effects, less work on the way:

- The transition tables are read once each, unsorted. PostgreSQL records an
  updated row's old and new versions together, so ``old_rows`` and
  ``new_rows`` list the jobs in the same order; the ids are compared one for
  one to be sure, and sorting both is the fallback (a changed id still fails).
- A statement that changed no state (a new priority or run_at, dependents
  counted down that still wait) stops there.
- The state machine is checked first on the whole statement at once: when
  every changed job went to one state from states allowed to reach it (a
  claim: to executing; an outcome batch: to completed; an operator's bulk
  action), two array comparisons prove it. Other statements are checked job
  by job as before, and the lowest forbidden job is named.
- Events of changes made by a session that had never set
  ``pgjobs.publisher`` (say, a web process cancelling jobs through the ORM)
  were lost: the unset setting reads as NULL, which made the whole condition
  NULL, that is false. It is compared with IS NOT DISTINCT FROM now.
- A statement that finished jobs looks for dependents only while some
  dependency, anywhere, is unsatisfied (one probe of a new partial index):
  without pipelines in flight, no statement looks. The index is built CONCURRENTLY: a plain
  build would hold up every worker writing outcomes until it is done.
"""

from importlib import import_module

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

_triggers = import_module("tests.migrations_before_squash.0002_triggers")
_performance = import_module("tests.migrations_before_squash.0009_performance")
_linear = import_module("tests.migrations_before_squash.0011_linear_triggers")


def _reachable_from() -> str:
    """CASE <target> WHEN 'x' THEN ARRAY[<x and every state allowed to move to x>] END."""
    sources: dict[str, set[str]] = {}
    for pair in _triggers.ALLOWED_PAIRS:
        source, target = pair.split(">")
        sources.setdefault(target, {target}).add(source)
    quoted = {target: ", ".join(f"'{s}'" for s in sorted(found)) for target, found in sources.items()}
    branches = " ".join(
        f"WHEN '{target}' THEN ARRAY[{quoted[target]}]" for target in sorted(quoted)
    )
    return f"CASE states[1] {branches} ELSE ARRAY[]::text[] END"


# The release of dependents (unchanged from 0011) starts at this statement.
_RELEASE = "    WITH finished AS (" + _linear.FORWARD.split("    WITH finished AS (", 1)[1].split(
    "    RETURN NULL;\nEND\n$$;", 1
)[0]

FORWARD = (
    """
CREATE OR REPLACE FUNCTION pgjobs_job_transitioned() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    old_ids bigint[];
    states text[];
    previous text[];
    tasks text[];
    queues text[];
    attempts integer[];
    sorted boolean := false;
    bad record;
BEGIN
    -- Old and new rows come in the same order (see the migration's notes).
    SELECT n.ids, n.states, o.ids, o.states INTO ids, states, old_ids, previous
    FROM (SELECT array_agg(id) AS ids, array_agg(state) AS states FROM new_rows) AS n,
         (SELECT array_agg(id) AS ids, array_agg(state) AS states FROM old_rows) AS o;
    IF ids IS NULL THEN  -- an UPDATE that matched nothing
        RETURN NULL;
    END IF;
    IF old_ids IS DISTINCT FROM ids THEN
        sorted := true;
        SELECT array_agg(id ORDER BY id), array_agg(state ORDER BY id) INTO ids, states
        FROM new_rows;
        SELECT array_agg(id ORDER BY id), array_agg(state ORDER BY id) INTO old_ids, previous
        FROM old_rows;
        IF old_ids IS DISTINCT FROM ids THEN
            RAISE EXCEPTION 'pgjobs: job ids cannot change' USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF states = previous THEN  -- no job changed state
        RETURN NULL;
    END IF;

    -- The state machine: the first forbidden move fails the whole statement. One
    -- target state reached from states allowed to reach it needs no look at each job.
    IF NOT (states <@ ARRAY[states[1]] AND previous <@ ({reachable})) THEN
        SELECT c.id, c.from_state, c.to_state INTO bad
        FROM unnest(ids, previous, states) AS c (id, from_state, to_state)
        WHERE c.to_state IS DISTINCT FROM c.from_state
          AND NOT (c.from_state || '>' || c.to_state = ANY ({pairs}))
        ORDER BY c.id
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'pgjobs: job % cannot go from % to %',
                bad.id, bad.from_state, bad.to_state
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    -- Events. A statement that publishes its own after it commits (a worker's
    -- claims and outcomes) says so by setting pgjobs.publisher to its start time;
    -- changes it causes through this trigger (released dependents) are still
    -- published here. PGJOBS["EVENTS"] = False sets pgjobs.events to off.
    IF NOT (pg_trigger_depth() = 1
            AND current_setting('pgjobs.publisher', true) IS NOT DISTINCT FROM
                statement_timestamp()::text)
       AND current_setting('pgjobs.events', true) IS DISTINCT FROM 'off' THEN
        IF sorted THEN
            SELECT array_agg(task ORDER BY id), array_agg(queue ORDER BY id),
                   array_agg(attempt ORDER BY id)
            INTO tasks, queues, attempts FROM new_rows;
        ELSE
            SELECT array_agg(task), array_agg(queue), array_agg(attempt)
            INTO tasks, queues, attempts FROM new_rows;
        END IF;
        PERFORM pgjobs_publish_events(
            array_agg(c.id), array_agg(c.task), array_agg(c.queue),
            array_agg(c.state), array_agg(c.previous), array_agg(c.attempt)
        )
        FROM unnest(ids, tasks, queues, states, previous, attempts)
            AS c (id, task, queue, state, previous, attempt)
        WHERE c.state IS DISTINCT FROM c.previous
        HAVING count(*) > 0;
    END IF;

    -- Dependencies: finished jobs are counted off their dependents, whose release
    -- (or cancellation) is an UPDATE that fires this trigger again, one level down.
    -- A statement that finished nothing (a claim; the release's own UPDATE when it
    -- released nothing) stops here, which also ends that recursion; so does one
    -- while no dependency anywhere waits (one probe of pgjobs_dependency_unsatisfied).
    IF NOT ('completed' = ANY (states) OR 'discarded' = ANY (states)
            OR 'cancelled' = ANY (states)) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT FROM pgjobs_jobdependency WHERE NOT satisfied) THEN
        RETURN NULL;
    END IF;
{release}    RETURN NULL;
END
$$;
""".replace("{reachable}", _reachable_from())
    .replace("{pairs}", _performance.PAIRS)
    .replace("{release}", _RELEASE)
)

# 0011's function, as it was.
REVERSE = "CREATE OR REPLACE FUNCTION" + _linear.FORWARD.split("CREATE FUNCTION", 1)[1].split(
    "CREATE TRIGGER", 1
)[0]


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY can't run in a transaction

    dependencies = [("pgjobs", "0012_unique_key_index_without_nulls")]

    operations = [
        AddIndexConcurrently(
            model_name="jobdependency",
            index=models.Index(
                condition=models.Q(("satisfied", False)),
                fields=["depends_on"],
                name="pgjobs_dependency_unsatisfied",
            ),
        ),
        migrations.RunSQL(FORWARD, REVERSE),
    ]
