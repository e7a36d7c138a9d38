-- Flow control of orchestrations: each instance of a limited orchestrator, held (admitted 0:
-- Pending, it and its messages leased to 'duractor.flow') or let run (admitted 1: counted
-- against the limits until it finishes). The id orders held instances of one priority.
CREATE TABLE flow_instances (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    flow_key    TEXT,
    priority    INTEGER NOT NULL DEFAULT 0,
    admitted    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX flow_instances_by_name ON flow_instances (name, admitted);
