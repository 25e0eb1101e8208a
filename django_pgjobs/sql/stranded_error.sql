-- Why a stranded job (job, stranded: sql/stranded.sql) can never run, its error's text:
-- cancel_stranded.sql writes it, find_stranded.sql shows it. Not a statement of its own.
'DependencyFailed: ' || CASE
    WHEN stranded.cycle IS NOT NULL
    THEN 'it waits for itself, through a dependency cycle of jobs '
         || stranded.cycle
    WHEN stranded.waits_for IS NOT NULL
    THEN 'it counts ' || job.pending_dependencies
         || ' unfinished dependencies, but waits for ' || stranded.waits_for
    WHEN stranded.dependency IS NULL
    THEN 'it waits for ' || job.pending_dependencies
         || ' dependencies, but no job it depends on is unfinished'
    WHEN stranded.ended IS NULL
    THEN 'job ' || stranded.dependency || ' does not exist'
    ELSE 'job ' || stranded.dependency || ' ended ' || stranded.ended
         || ' without releasing it'
END
