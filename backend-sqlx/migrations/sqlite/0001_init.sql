-- duractor schema for SQLite. Times are Unix milliseconds (UTC).

-- One row per orchestration instance (its status, derived from its history) and per entity
-- (kind 'entity', instance_id '@name@key': its state and critical-section lock).
CREATE TABLE instances (
    instance_id   TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL DEFAULT 'orchestration',
    name          TEXT NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    failure       TEXT,
    custom_status TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    history_len   INTEGER NOT NULL DEFAULT 0,
    entity_state  TEXT,
    lock_owner    TEXT,
    locked_by     TEXT,
    locked_until  INTEGER
);
CREATE INDEX instances_by_status ON instances (kind, status, instance_id);
CREATE INDEX instances_by_lock_owner ON instances (lock_owner) WHERE lock_owner IS NOT NULL;
CREATE INDEX instances_by_created ON instances (created_at);
CREATE INDEX instances_by_owner ON instances (locked_by) WHERE locked_by IS NOT NULL;

-- The append-only history of each instance.
CREATE TABLE history (
    instance_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_id, idx)
) WITHOUT ROWID;

-- Messages to orchestration instances; timers are messages visible at their fire time.
CREATE TABLE orch_queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    visible_at   INTEGER NOT NULL,
    message      TEXT NOT NULL,
    execution    INTEGER,
    locked_by    TEXT,
    locked_until INTEGER
);
CREATE INDEX orch_queue_by_visible ON orch_queue (visible_at, id);
CREATE INDEX orch_queue_by_instance ON orch_queue (instance_id);
CREATE INDEX orch_queue_by_owner ON orch_queue (locked_by) WHERE locked_by IS NOT NULL;

-- Activity work items.
CREATE TABLE activity_queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    name         TEXT NOT NULL,
    input        TEXT NOT NULL,
    execution    INTEGER NOT NULL DEFAULT 0,
    attempt      INTEGER NOT NULL DEFAULT 1,
    locked_by    TEXT,
    locked_until INTEGER
);
CREATE INDEX activity_queue_by_instance ON activity_queue (instance_id);
CREATE INDEX activity_queue_by_lock ON activity_queue (locked_until);
CREATE INDEX activity_queue_by_owner ON activity_queue (locked_by) WHERE locked_by IS NOT NULL;
