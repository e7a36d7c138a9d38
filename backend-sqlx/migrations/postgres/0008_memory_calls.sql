-- Calls a worker keeps in memory instead of as work items (NewActivity::in_memory): a JSON
-- object by call seq, each value the work item the call becomes if its worker lets it go
-- (its lease lapses, it releases the instance) or asks for one (it runs long). No index:
-- an index naming it would make every turn's update of the row a non-HOT one; the sweep
-- of lapsed leases reads the leased rows through instances_by_owner.
ALTER TABLE instances ADD COLUMN calls JSONB;
