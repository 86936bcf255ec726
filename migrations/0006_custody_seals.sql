-- Up Migration
-- The custody log's order, its seals and its signing keys (docs/custody.md).
--
-- 1. The order of the log is the order of `seq`, and a sequence number is drawn only once its transaction has an ID.
-- Numbers are drawn before their transactions commit, so they commit out of order; the sealer folds a number into
-- the tree only once it is final: every transaction that could still insert it has ended (src/audit/settle.ts).
-- It learns that from the IDs of the transactions running in this database. An identity column draws its number
-- before the row's transaction may have an ID (PostgreSQL assigns one at the first write, which is this very insert
-- when the event is a transaction's first row), so such a transaction would be invisible to the sealer for a moment
-- while it holds a number. The trigger below takes the transaction's ID first and then the number, for every
-- insert, whatever the inserter supplies.
ALTER TABLE audit_event ALTER COLUMN seq DROP IDENTITY;
CREATE SEQUENCE audit_event_seq AS bigint OWNED BY audit_event.seq;
SELECT setval('audit_event_seq', COALESCE((SELECT max(seq) FROM audit_event), 0) + 1, false);

CREATE FUNCTION audit_event_number() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_current_xact_id(); -- the transaction has its ID before it holds a number
  NEW.seq := nextval('audit_event_seq');
  RETURN NEW;
END
$$;
CREATE TRIGGER audit_event_number BEFORE INSERT ON audit_event
  FOR EACH ROW EXECUTE FUNCTION audit_event_number();

-- 2. Seals: one row per signed checkpoint. Leaf i (from 0) of the RFC 9162 tree is the event numbered i + 1, or,
-- for a number whose transaction rolled back, a gap leaf (src/audit/leaves.ts). A seal records the leaf hashes it
-- added (so that a verifier can name the one event that differs from what was sealed), the numbers that were gaps,
-- the tree's right edge after it (enough to go on from there once older events are pruned) and the signed note.
CREATE TABLE audit_seal (
  tree_size   bigint PRIMARY KEY CHECK (tree_size > 0),
  first_seq   bigint NOT NULL CHECK (first_seq BETWEEN 1 AND tree_size),
  leaf_hashes bytea NOT NULL CHECK (length(leaf_hashes) = 32 * (tree_size - first_seq + 1)),
  gaps        bigint[] NOT NULL DEFAULT '{}',
  frontier    bytea NOT NULL CHECK (length(frontier) % 32 = 0),
  checkpoint  text NOT NULL,
  sealed_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (first_seq)
);

-- Keys that sign the checkpoints. The classical key lives in the HSM (only its public half is here); the
-- post-quantum key's secret half is kept sealed under the KEK, as key material is (no HSM here holds ML-DSA keys).
-- `vkey` is the C2SP verifier key (name+keyid+base64(type || public key)) that auditors pin.
CREATE TABLE audit_signing_key (
  vkey        text PRIMARY KEY,
  algorithm   text NOT NULL CHECK (algorithm IN ('ecdsa-p256', 'ml-dsa-65')),
  held_in     text NOT NULL CHECK (held_in IN ('hsm', 'kek')),
  sealed_secret bytea CHECK ((held_in = 'kek') = (sealed_secret IS NOT NULL)),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- 3. Witnessing. Peer KMEs cosign this log's checkpoints (one operator alone cannot fork it): their signature lines,
-- kept beside the seal they sign. And the logs this KME witnesses for its peers: the latest size and root it cosigned
-- for each, so that it signs nothing that does not extend them (its own log records each cosigning as an event).
CREATE TABLE audit_cosignature (
  tree_size   bigint NOT NULL REFERENCES audit_seal (tree_size),
  witness     text NOT NULL,
  signatures  text NOT NULL, -- the witness's signature lines for the checkpoint's note
  cosigned_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tree_size, witness)
);
CREATE TABLE witnessed_log (
  peer_kme_id text PRIMARY KEY,
  origin      text NOT NULL,
  vkeys       text[] NOT NULL, -- pinned on first contact (or from config); a checkpoint must verify with them
  tree_size   bigint NOT NULL,
  root        bytea NOT NULL CHECK (length(root) = 32),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- 4. Retention. Sealed history can be archived (a verified export bundle) and its events removed; the seals stay, so
-- what remains still verifies from the archive's last checkpoint. Each pruning is recorded here, before any event goes.
CREATE TABLE audit_prune (
  up_to_size     bigint PRIMARY KEY REFERENCES audit_seal (tree_size),
  archive_sha256 text NOT NULL,
  events         bigint NOT NULL,
  pruned_at      timestamptz NOT NULL DEFAULT now()
);

-- Append-only like the events (the refusal now names the table it guards). The one exception: removing events that a
-- recorded pruning covers, by a session that says it is pruning (`kms audit prune`, as the tables' owner: the KME's
-- own role has no DELETE privilege on the log at all).
CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Nested: OLD.seq may only be read on audit_event, and PL/pgSQL does not promise to short-circuit an AND.
  IF TG_TABLE_NAME = 'audit_event' AND TG_OP = 'DELETE' AND current_setting('qkms.pruning', true) = 'on' THEN
    IF EXISTS (SELECT 1 FROM audit_prune WHERE up_to_size >= OLD.seq) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_seal_no_update_delete BEFORE UPDATE OR DELETE ON audit_seal
  FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_seal
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_signing_key_no_update_delete BEFORE UPDATE OR DELETE ON audit_signing_key
  FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_signing_key_no_truncate BEFORE TRUNCATE ON audit_signing_key
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_cosignature_no_update_delete BEFORE UPDATE OR DELETE ON audit_cosignature
  FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_cosignature_no_truncate BEFORE TRUNCATE ON audit_cosignature
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_prune_no_update_delete BEFORE UPDATE OR DELETE ON audit_prune
  FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_prune_no_truncate BEFORE TRUNCATE ON audit_prune
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();
