-- Calls a worker keeps in memory instead of as work items (NewActivity::in_memory): a JSON
-- object by call seq, each value the work item the call becomes if its worker lets it go
-- (its lease lapses, it releases the instance) or asks for one (it runs long).
ALTER TABLE instances ADD COLUMN calls TEXT;
