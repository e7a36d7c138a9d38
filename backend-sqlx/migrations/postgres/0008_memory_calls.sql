-- Calls a worker keeps in memory instead of as work items (NewActivity::in_memory): a JSON
-- object by call seq, each value the worker keeping it and the work item the call becomes if
-- that worker lets it go (releases the instance, loses its lease) or asks for one (it runs
-- long). No index: an index naming the column would make every turn's update of the row a
-- non-HOT one; the sweep of lost calls reads the leased rows through instances_by_owner.
ALTER TABLE instances ADD COLUMN calls JSONB;
