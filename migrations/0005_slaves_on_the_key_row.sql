-- Up Migration
-- A key's slaves live on its own row (docs/storage.md, "What a delivered key costs").
--
-- key_slave held one row per key and slave: a heap tuple, a primary-key entry and a foreign-key check (a locking
-- read of qkd_key) for every key delivered, about a quarter of the database's work per key on the bench. Every query
-- reads a key's slaves together with the key, so they move onto the key's row: `slaves` are the SAEs named (each
-- may fetch the key once), `fetched_by` those that did. The time of each fetch is in the custody log
-- (deliver_slave), as before.
ALTER TABLE qkd_key
  ADD COLUMN slaves     text[] NOT NULL DEFAULT '{}',
  ADD COLUMN fetched_by text[] NOT NULL DEFAULT '{}';
UPDATE qkd_key q
   SET slaves = s.slaves, fetched_by = s.fetched
  FROM (SELECT key_id, array_agg(sae_id ORDER BY sae_id) AS slaves,
               COALESCE(array_agg(sae_id ORDER BY sae_id) FILTER (WHERE delivered_at IS NOT NULL), '{}') AS fetched
          FROM key_slave GROUP BY key_id) AS s
 WHERE s.key_id = q.key_id;
ALTER TABLE qkd_key
  ADD CONSTRAINT qkd_key_fetched_by_slaves CHECK (fetched_by <@ slaves),
  ADD CONSTRAINT qkd_key_slaves_pending CHECK (slaves_pending = cardinality(slaves) - cardinality(fetched_by));
DROP TABLE key_slave;

-- The link of a key was checked by a foreign key: a locking read of the link's one row for every key, which all
-- concurrent deliveries share (about 7 µs per key, most of it sharing that row lock). Keys take their positions from
-- chunks, whose link is checked by their own foreign key, and links are never deleted: the database refuses it.
ALTER TABLE qkd_key DROP CONSTRAINT qkd_key_link_id_fkey;
CREATE FUNCTION link_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'links are never deleted: keys, chunks and audit events name them (% refused)', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER link_never_deleted BEFORE DELETE OR TRUNCATE ON link
  FOR EACH STATEMENT EXECUTE FUNCTION link_refuse_delete();

-- Down Migration
-- Irreversible on purpose, like 0001.
