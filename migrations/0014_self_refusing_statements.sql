-- Up Migration
-- A statement that checks its own result: the KME's binding and settling statements end by calling this when what
-- they found is not what the caller expected (a position bound twice, a key no longer reserved, a deadline passed).
-- The error aborts the whole statement, so one run on its own (autocommit, no transaction around it) changes
-- nothing either: the check needs no BEGIN, no lock taken beforehand and no COMMIT after it (src/store/errors.ts, `refusing`).
CREATE FUNCTION qkms_refuse(code text, message text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END
$$;

-- Down Migration
DROP FUNCTION qkms_refuse(text, text);
