-- The CTEs ending in stranded (id, dependency, ended, waits_for, cycle), and search (how
-- far the search for cycles got): the waiting
-- jobs that nothing can release any more, one reason each. cancel_stranded.sql cancels
-- them (the prune pass); find_stranded.sql names them (the health check, which pruning
-- turned off leaves the only one to say so). Not a statement of its own.
-- One of their unsatisfied edges names a job that doesn't exist (deleted around transitions.delete_many,
-- which cancels such dependents itself: by SQL, or by a session that skipped the
-- foreign keys' triggers, as a restore of part of a dump does) or a job that has
-- finished (a job releases its edges as it finishes, once: this one was written
-- after, by SQL or a restore), or they count pending dependencies while no
-- unsatisfied edge is left (a row written by SQL). Also those counting fewer than
-- their unsatisfied edges (a row written by SQL): the job table's trigger counts one
-- off as each finishes, and below zero the CHECK refused that dependency's finish,
-- every time (at zero the job was released while a dependency still ran).
-- And every job of a dependency cycle (edges written by SQL: A waits on B, B on A),
-- which none of them can ever leave.
WITH RECURSIVE unsatisfied AS MATERIALIZED (
    -- Every unsatisfied edge (pgjobs_dependency_unsatisfied), a key probe each for
    -- its dependency's state (found false: no such job).
    SELECT edge.job_id, edge.depends_on_id, dep.id IS NOT NULL AS found, dep.state AS ended
    FROM pgjobs_jobdependency AS edge
    LEFT JOIN pgjobs_job AS dep ON dep.id = edge.depends_on_id
    WHERE NOT edge.satisfied
), missing AS (
    -- The first edge of each job that names no job (ended NULL) or a finished one.
    SELECT DISTINCT ON (job_id)
           job_id AS id, depends_on_id AS dependency, ended, NULL::bigint AS waits_for,
           NULL::text AS cycle
    FROM unsatisfied
    WHERE NOT found OR ended IN ('completed', 'discarded', 'cancelled')
    ORDER BY job_id, depends_on_id
), undercounted AS (
    -- Each waiting job counting fewer dependencies than its unsatisfied edges.
    SELECT job.id, NULL::bigint AS dependency, NULL::varchar AS ended, counted.waits_for,
           NULL::text AS cycle
    FROM (SELECT job_id, count(*) AS waits_for FROM unsatisfied GROUP BY job_id) AS counted
    JOIN pgjobs_job AS job ON job.id = counted.job_id
    WHERE job.state = 'waiting' AND job.pending_dependencies < counted.waits_for
), unreleasable AS (
    -- Every waiting job (pgjobs_job_state_queue_rest), an edge probe each.
    SELECT job.id, NULL::bigint AS dependency, NULL::varchar AS ended,
           NULL::bigint AS waits_for, NULL::text AS cycle
    FROM pgjobs_job AS job
    WHERE job.state = 'waiting'
      AND NOT EXISTS (
          SELECT FROM pgjobs_jobdependency AS edge WHERE edge.job_id = job.id AND NOT edge.satisfied
      )
), origins AS MATERIALIZED (
    -- Where the search for cycles starts: each job that waits on a newer one and that
    -- a newer one waits on, as the lowest job of a cycle does. A pipeline's jobs wait
    -- on older ones (an edge to a newer job is rare: a running job adding to its
    -- pipeline), so there are few. (From every job waiting on a newer one, a chain of
    -- 3,000 so made by SQL took 7.7 s, each of its jobs walking the rest of it.) Those
    -- after %(after)s, the first %(origins)s (NULL: all): a pass whose walk was cut
    -- takes fewer next time, from where it got to (maintenance.CycleSearch).
    SELECT DISTINCT job_id AS id FROM unsatisfied
    WHERE ended = 'waiting' AND depends_on_id > job_id AND job_id > %(after)s
      AND job_id IN (SELECT depends_on_id FROM unsatisfied WHERE job_id > depends_on_id)
    ORDER BY 1
    LIMIT %(origins)s
), ahead (origin, id) AS (
    -- Cycles, each found from its lowest job: the jobs each origin reaches along
    -- unsatisfied edges to waiting jobs of higher ids, UNION keeping one row a pair.
    -- Each step probes the edges' and jobs' indexes, the OFFSET keeping the planner from
    -- hashing every unsatisfied edge at each step of a long cycle (a cycle of 5,000
    -- jobs: 5,000 steps, 5.5 s).
    SELECT job_id, depends_on_id FROM unsatisfied
    WHERE ended = 'waiting' AND depends_on_id > job_id AND job_id IN (SELECT id FROM origins)
    UNION
    SELECT ahead.origin, next.id
    FROM ahead CROSS JOIN LATERAL (
        SELECT edge.depends_on_id AS id
        FROM pgjobs_jobdependency AS edge JOIN pgjobs_job AS dep ON dep.id = edge.depends_on_id
        WHERE edge.job_id = ahead.id AND NOT edge.satisfied AND dep.state = 'waiting'
          AND edge.depends_on_id >= ahead.origin
        OFFSET 0
    ) AS next
    WHERE ahead.id <> ahead.origin
), walked AS MATERIALIZED (
    -- The walk, %(walk_cap)s steps at most: many waiting jobs each waiting on a long
    -- chain of newer ones (written by SQL) each walked all of it, 2,000 of them 13 s.
    -- PostgreSQL takes the steps a reader asks for only, so the LIMIT stops the walk.
    -- A walk cut short misses cycles, never makes one up: a job reaching itself is on one.
    SELECT origin, id FROM ahead LIMIT %(walk_cap)s
), behind (origin, id) AS (
    -- From each job that reaches itself, back along the same edges, by the same
    -- index probes: the jobs that reach it.
    SELECT origin, origin FROM walked WHERE id = origin
    UNION
    SELECT behind.origin, previous.id
    FROM behind CROSS JOIN LATERAL (
        SELECT edge.job_id AS id
        FROM pgjobs_jobdependency AS edge JOIN pgjobs_job AS job ON job.id = edge.job_id
        WHERE edge.depends_on_id = behind.id AND NOT edge.satisfied AND job.state = 'waiting'
          AND edge.job_id > behind.origin
        OFFSET 0
    ) AS previous
), walked_back AS MATERIALIZED (
    -- As bounded: a job can be behind many cycles' lowest jobs. A cycle's jobs not
    -- reached are cancelled after those that are, as behind any cancelled job.
    SELECT origin, id FROM behind LIMIT %(walk_cap)s
), search AS (
    -- How far this pass's search got, for the next one (maintenance.CycleSearch).
    SELECT (SELECT count(*) FROM walked) AS steps,
           (SELECT count(*) FROM walked_back) AS steps_back,
           (SELECT count(*) FROM origins) AS origins,
           (SELECT max(id) FROM origins) AS last_origin
), cycled AS (
    -- A job both reached from and reaching a cycle's lowest job is on a cycle through
    -- it. Each is named with the jobs of the cycles through the lowest such job (all
    -- the jobs its cycles are made of), the first ten: a list of them all, for each
    -- of a cycle's jobs, was 25 million ids to sort for a cycle of 5,000.
    SELECT DISTINCT ON (member.id)
           member.id, NULL::bigint AS dependency, NULL::varchar AS ended,
           NULL::bigint AS waits_for, cycles.named AS cycle
    FROM (
        SELECT walked_back.origin, array_agg(walked_back.id ORDER BY walked_back.id) AS members,
               array_to_string((array_agg(walked_back.id ORDER BY walked_back.id))[:10], ', ')
               || CASE WHEN count(*) > 10 THEN ' and ' || count(*) - 10 || ' more'
                       ELSE '' END AS named
        FROM walked_back JOIN walked USING (origin, id)
        GROUP BY walked_back.origin
    ) AS cycles
    CROSS JOIN unnest(cycles.members) AS member (id)
    ORDER BY member.id, cycles.origin
), stranded AS (
    -- One reason a job, a missing or finished dependency first (it names the job), a
    -- cycle last; unreleasable ones have no unsatisfied edge, so are in no cycle.
    SELECT DISTINCT ON (id) *
    FROM (
        SELECT * FROM missing
        UNION ALL SELECT * FROM undercounted
        UNION ALL SELECT * FROM unreleasable
        UNION ALL SELECT * FROM cycled
    ) AS found
    ORDER BY id, dependency IS NULL, cycle IS NOT NULL
)
