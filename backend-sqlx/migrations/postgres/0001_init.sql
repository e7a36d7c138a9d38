-- duractor schema for PostgreSQL. Times are Unix milliseconds (UTC). The tables live in the
-- store's schema (the connection's search_path).

-- One row per orchestration instance (its status, derived from its history) and per entity
-- (kind 'entity', instance_id '@name@key': its state and critical-section lock).
CREATE TABLE instances (
    instance_id   TEXT PRIMARY KEY,
    kind          TEXT NOT NULL DEFAULT 'orchestration',
    name          TEXT NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    failure       TEXT,
    custom_status TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    completed_at  BIGINT,
    history_len   BIGINT NOT NULL DEFAULT 0,
    entity_state  TEXT,
    lock_owner    TEXT,
    locked_by     TEXT,
    locked_until  BIGINT
);
CREATE INDEX instances_by_status ON instances (kind, status, instance_id);
CREATE INDEX instances_by_created ON instances (created_at);
CREATE INDEX instances_by_owner ON instances (locked_by) WHERE locked_by IS NOT NULL;
CREATE INDEX instances_by_lock_owner ON instances (lock_owner) WHERE lock_owner IS NOT NULL;

-- The append-only history of each instance.
CREATE TABLE history (
    instance_id TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_id, idx)
);

-- Messages to orchestration instances and entities; timers are messages visible at their
-- fire time.
CREATE TABLE orch_queue (
    id           BIGSERIAL PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    visible_at   BIGINT NOT NULL,
    message      TEXT NOT NULL,
    execution    BIGINT,
    locked_by    TEXT,
    locked_until BIGINT
);
CREATE INDEX orch_queue_by_visible ON orch_queue (visible_at, id);
CREATE INDEX orch_queue_by_instance ON orch_queue (instance_id);
CREATE INDEX orch_queue_by_owner ON orch_queue (locked_by) WHERE locked_by IS NOT NULL;

-- Activity work items.
CREATE TABLE activity_queue (
    id           BIGSERIAL PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    name         TEXT NOT NULL,
    input        TEXT NOT NULL,
    execution    BIGINT NOT NULL DEFAULT 0,
    attempt      BIGINT NOT NULL DEFAULT 1,
    locked_by    TEXT,
    locked_until BIGINT
);
CREATE INDEX activity_queue_by_instance ON activity_queue (instance_id);
CREATE INDEX activity_queue_by_lock ON activity_queue (locked_until);
CREATE INDEX activity_queue_by_owner ON activity_queue (locked_by) WHERE locked_by IS NOT NULL;
