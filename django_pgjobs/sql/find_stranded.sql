-- The first %(shown)s stranded jobs (sql/stranded.sql), lowest id first, each with the
-- error a prune pass would cancel it with, and how many there are in all: the health
-- check names them when pruning is off. Reads only: a probe cancels nothing. Each row
-- also says how far the search for cycles got; a row of it alone (id NULL) if none is.
-- include: stranded
, first_stranded AS (
    SELECT job.id, job.task,
-- include: stranded_error
        AS error, count(*) OVER () AS total
    FROM stranded
    JOIN pgjobs_job AS job ON job.id = stranded.id
    WHERE job.state = 'waiting'
    ORDER BY job.id
    LIMIT %(shown)s
)
SELECT first_stranded.*, search.steps, search.steps_back
FROM search LEFT JOIN first_stranded ON true
ORDER BY first_stranded.id
