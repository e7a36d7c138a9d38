-- Bounds and progress of activity calls: the timeouts the worker running a work item enforces
-- (JSON: start-to-close and heartbeat in ms, the schedule-to-close deadline in Unix ms), and
-- the details and time of its last heartbeat, which a redelivery resumes from.
ALTER TABLE activity_queue ADD COLUMN timeouts TEXT;
ALTER TABLE activity_queue ADD COLUMN heartbeat TEXT;
ALTER TABLE activity_queue ADD COLUMN heartbeat_at BIGINT;
