-- One row per writer (one per open store): the last attempt of a transaction it committed.
-- Every write transaction, and every claim that commits on its own, records its attempt here
-- in its first statement, so a writer that lost the answer to a commit reads this row (waiting
-- for a transaction that still holds it) to learn whether the commit happened.
CREATE TABLE writers (
    writer     TEXT PRIMARY KEY NOT NULL,
    batch      BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The attempt of the claim that leased a message or work item: the rows a claim took are
-- read back by it when the claim's answer was lost.
ALTER TABLE orch_queue ADD COLUMN claim_token BIGINT;
ALTER TABLE activity_queue ADD COLUMN claim_token BIGINT;
