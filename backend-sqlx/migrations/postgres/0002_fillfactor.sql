-- Leave room on each page of instances for the new row version of an update: most turns
-- change only columns no index covers (history_len, updated_at, locked_until), and with room
-- on the page PostgreSQL makes that a HOT update, which writes no index entries.
ALTER TABLE instances SET (fillfactor = 50);
