-- One row per writer (one per open store): the last attempt of a transaction it committed.
-- Every write transaction records its attempt here in its first statement, so a writer that
-- lost the answer to a commit reads this row to learn whether the commit happened.
CREATE TABLE writers (
    writer     TEXT PRIMARY KEY NOT NULL,
    batch      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
