-- Up Migration
-- What operators do to keys (docs/operators.md, "Keys"): hold them, revoke them as compromised, destroy them, and ask
-- who received which keys since when.

-- A hold on a live key (SUSPENDED, DESIGN §5): while it is set, no slave gets the key here (dec_keys answers 400);
-- resuming clears it. Orthogonal to `state`, so a resumed key goes back to exactly where it was, and the key's
-- time-to-live keeps running while it is held (a held key expires like any other).
ALTER TABLE qkd_key ADD COLUMN held_at timestamptz;
ALTER TABLE qkd_key ADD CONSTRAINT qkd_key_held_only_live CHECK (held_at IS NULL OR state IN ('RESERVED', 'DELIVERED'));

-- Revoked as compromised (COMPROMISED) is an end like DESTROYED and EXPIRED: the material is erased at once, the
-- row keeps its time of death (so the eraser compacts it like the others; its custody lives on in audit_event).
DO $$
DECLARE
  name text;
BEGIN
  SELECT conname INTO name FROM pg_constraint
   WHERE conrelid = 'qkd_key'::regclass AND contype = 'c'
     AND pg_get_constraintdef(oid) LIKE '%destroyed_at IS NOT NULL%' AND pg_get_constraintdef(oid) NOT LIKE '%COMPROMISED%';
  IF name IS NULL THEN
    RAISE EXCEPTION 'qkd_key: the check tying destroyed_at to the ended states was not found';
  END IF;
  EXECUTE format('ALTER TABLE qkd_key DROP CONSTRAINT %I', name);
END
$$;
ALTER TABLE qkd_key ADD CONSTRAINT qkd_key_ended_when
  CHECK ((state IN ('DESTROYED', 'EXPIRED', 'COMPROMISED')) = (destroyed_at IS NOT NULL));
ALTER TABLE qkd_key ADD CONSTRAINT qkd_key_compromised_erased CHECK (state <> 'COMPROMISED' OR wrapped IS NULL);

-- "Which keys did SAE X receive since T" and "which SAEs hold keys from link L since T" are answered from the custody
-- log (keys' rows are compacted once ended). Events are appended in time order, so a BRIN index over `at` finds the
-- pages since T for a few kilobytes of index and almost nothing per insert (a btree would cost every delivery).
CREATE INDEX audit_event_at ON audit_event USING brin (at);

-- Down Migration
-- Irreversible on purpose, like 0001.
