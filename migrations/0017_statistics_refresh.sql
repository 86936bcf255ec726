-- Up Migration
-- The statistics job (src/lifecycle/statistics.ts) analyzes the pool's tables that hold enough rows to be planned from
-- their statistics. ANALYZE needs the table's owner: run as the KME's own role (src/store/app-role.ts), which owns
-- nothing, PostgreSQL skipped every table with a warning and the job did nothing. SECURITY DEFINER runs it as this
-- function's owner, the role that ran the migrations, with a fixed search_path; the tables are named here, so a caller
-- chooses only the threshold. Returns the tables it analyzed, by name.
CREATE FUNCTION qkms_refresh_statistics(min_live_rows bigint) RETURNS text[]
  LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
  AS $$
DECLARE
  analyzed text[] := '{}';
  t text;
BEGIN
  FOR t IN
    SELECT c.relname FROM pg_catalog.pg_class c
     WHERE c.oid = ANY (ARRAY['key_chunk', 'erase_queue', 'qkd_key', 'pool_count']::regclass[])
       AND pg_catalog.pg_stat_get_live_tuples(c.oid) >= min_live_rows
     ORDER BY c.relname
  LOOP
    EXECUTE format('ANALYZE %I', t);
    analyzed := analyzed || t;
  END LOOP;
  RETURN analyzed;
END
$$;

-- Down Migration
DROP FUNCTION qkms_refresh_statistics(bigint);
