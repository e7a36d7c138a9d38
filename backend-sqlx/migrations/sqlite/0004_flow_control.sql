-- Flow control: a work item's key (its activity's limits apply per key) and priority (higher
-- is claimed first), and the starts of rate-limited activities a claim counts (kept for one
-- period of the rate).
ALTER TABLE activity_queue ADD COLUMN flow_key TEXT;
ALTER TABLE activity_queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE TABLE flow_starts (
    name TEXT NOT NULL,
    flow_key TEXT,
    started_at INTEGER NOT NULL
);
CREATE INDEX flow_starts_by_name ON flow_starts (name, started_at);
