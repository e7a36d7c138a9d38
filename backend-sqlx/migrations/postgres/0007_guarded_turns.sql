-- A guarded turn (one statement that writes a turn and checks, in the same statement, what
-- its plan assumed: the instance's lease and history length, the messages and work items it
-- consumes) calls this when an assumption does not hold. It raises, so the statement, which
-- commits on its own, writes nothing; the writer then runs the batch the ordinary way.
CREATE OR REPLACE FUNCTION duractor_refuse(reason TEXT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'DU001', MESSAGE = reason;
END
$$;
