-- Up Migration
-- What operators do to pools (docs/operators.md, "Pools"): a pool is one link's material at this KME. Each end of a
-- paired link has its own pool, and its own operator's say over it.
--   active            keys are made from it, its device is read
--   suspended         no key, no one-time pad is handed out of it; its device is still read (up to the pool cap)
--   draining          keys are made from it, its device is no longer read: it runs dry
--   pending_deletion  as suspended, and its device is not read; at `delete_at` its unbound material is destroyed.
--                     Cancelling goes back to suspended, never straight to active, as cloud KMSs do for keys.
--   deleted           its material was destroyed: nothing is handed out or stored any more (final)
ALTER TABLE link
  ADD COLUMN pool_state text NOT NULL DEFAULT 'active'
    CHECK (pool_state IN ('active', 'suspended', 'draining', 'pending_deletion', 'deleted')),
  ADD COLUMN pool_delete_at timestamptz,
  ADD COLUMN pool_changed_at timestamptz NOT NULL DEFAULT now(),
  ADD CONSTRAINT link_pool_delete_at CHECK ((pool_state = 'pending_deletion') = (pool_delete_at IS NOT NULL));

-- Deleted is final, whatever issues the UPDATE.
CREATE FUNCTION link_pool_deleted_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.pool_state = 'deleted' AND NEW.pool_state <> 'deleted' THEN
    RAISE EXCEPTION 'the pool of link % was deleted: that is final', OLD.link_id USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER link_pool_deleted_final BEFORE UPDATE OF pool_state ON link
  FOR EACH ROW EXECUTE FUNCTION link_pool_deleted_final();

-- Down Migration
-- Irreversible on purpose, like 0001.
