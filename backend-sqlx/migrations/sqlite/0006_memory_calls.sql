-- Calls a worker keeps in memory instead of as work items (NewActivity::in_memory): a JSON
-- object by call seq, each value the worker keeping it and the work item the call becomes if
-- that worker lets it go (releases the instance, loses its lease) or asks for one (it runs
-- long). The partial index finds the rows that have some (the sweep of lost calls, stats);
-- an entry comes and goes only when a row's first call starts and its last one ends.
ALTER TABLE instances ADD COLUMN calls TEXT;
CREATE INDEX instances_with_calls ON instances (instance_id) WHERE calls IS NOT NULL;
