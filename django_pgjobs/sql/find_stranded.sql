-- The first %(shown)s stranded jobs (sql/stranded.sql), lowest id first, each with the
-- error a prune pass would cancel it with, and how many there are in all: the health
-- check names them when pruning is off. Reads only: a probe cancels nothing.
-- include: stranded
SELECT job.id, job.task,
-- include: stranded_error
    AS error, count(*) OVER () AS total
FROM stranded
JOIN pgjobs_job AS job ON job.id = stranded.id
WHERE job.state = 'waiting'
ORDER BY job.id
LIMIT %(shown)s
