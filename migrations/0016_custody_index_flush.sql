-- Up Migration
-- The custody log's index of key_IDs (audit_event_key_ids, GIN) takes new entries into a pending list and moves them
-- into the index proper when the list passes 4 MB. Autovacuum does that in the background, but it vacuums an
-- append-only table only each time it grew by a fifth; otherwise (and always where autovacuum is off) the statement
-- whose insert finds the list full does it, inside a key delivery: 90–240 ms, seen on the bench with autovacuum off.
-- The KME's leader calls this every second instead (src/lifecycle/custody-index-flush.ts), so deliveries find the
-- list short.
-- gin_clean_pending_list needs the index's owner; the KME may run as a role that owns nothing (src/store/app-role.ts):
-- SECURITY DEFINER runs it as this function's owner, the role that ran the migrations, with a fixed search_path.
CREATE FUNCTION qkms_flush_custody_index() RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT
  AS $$ SELECT pg_catalog.gin_clean_pending_list('audit_event_key_ids'::regclass) $$;

-- Down Migration
DROP FUNCTION qkms_flush_custody_index();
