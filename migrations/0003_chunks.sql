-- Up Migration
-- Key material in chunks (docs/storage.md): a chunk is one run of up to 4,096 consecutive positions of a link's key
-- stream with one owner, sealed as one envelope (a data key of its own, wrapped by the HSM's KEK). Keys name their
-- positions as ranges. This replaces one row, one HSM call and one index entry per 256-bit block, which held ingest
-- to a few Mbit/s and grew the database by a row per block forever.

-- Exclusion constraints over (link, range) need btree_gist's equality on text (a trusted extension: the database
-- owner may create it).
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Material of earlier versions is sealed block by block under a format this version no longer reads. Refuse rather
-- than lose it silently: drain the pool (or start on a new database) before upgrading.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM key_block WHERE wrapped IS NOT NULL) THEN
    RAISE EXCEPTION 'this database holds key material stored by an earlier version (per-block rows in key_block): '
      'deliver or destroy it with that version, or start this version on a new database'
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
END
$$;

-- The next stream position this KME has not stored yet. Kept on the link because chunks are deleted once all their
-- material is gone: positions are never reused, whatever the pool holds now.
ALTER TABLE link ADD COLUMN next_seq bigint NOT NULL DEFAULT 0 CHECK (next_seq >= 0);
UPDATE link l SET next_seq = COALESCE((SELECT max(seq) + 1 FROM key_block b WHERE b.link_id = l.link_id), 0);

-- One chunk of material. Positions [first_seq, first_seq + blocks) of the link, all owned by the same end.
-- - The owner hands positions out in order: [first_seq, first_seq + next_free) are taken (bound to keys or spent
--   as one-time pads), the rest is free. The peer's copy of a chunk keeps next_free = 0: the owner decides.
-- - `confirmed` is false while the primary waits for the peer to confirm it holds the same material (INGESTED:
--   never handed out); true once it is AVAILABLE.
-- - `gone` holds the positions whose material is destroyed; `sealed` no longer contains them once the chunk was
--   re-sealed since (the eraser, src/lifecycle/eraser.ts, within a bound the README states). A chunk whose every
--   position is gone is deleted.
-- - `set_aside`: the chunk failed its integrity check (COMPROMISED); kept for investigation, never handed out.
CREATE TABLE key_chunk (
  link_id     text NOT NULL REFERENCES link,
  first_seq   bigint NOT NULL CHECK (first_seq >= 0),
  blocks      integer NOT NULL CHECK (blocks > 0 AND blocks <= 4096),
  owned       boolean NOT NULL,
  confirmed   boolean NOT NULL,
  next_free   integer NOT NULL DEFAULT 0 CHECK (next_free >= 0 AND next_free <= blocks),
  gone        int8multirange NOT NULL DEFAULT '{}',
  set_aside   boolean NOT NULL DEFAULT false,
  sealed      bytea NOT NULL,
  kek_version integer NOT NULL CHECK (kek_version > 0),
  ingested_at timestamptz NOT NULL DEFAULT now(),
  -- Every position taken. Only this, not next_free itself, is in the claim index's predicate: a claim that moves the
  -- cursor without using up the chunk changes no indexed column, so PostgreSQL updates the row in place (a HOT
  -- update: no new index entries, dead versions pruned on the page) — thousands of claims a second on one chunk
  -- would otherwise leave as many dead entries in the index for every later claim to step over.
  exhausted   boolean GENERATED ALWAYS AS (next_free >= blocks) STORED,
  PRIMARY KEY (link_id, first_seq),
  CHECK (owned OR next_free = 0),
  CHECK (gone <@ int8multirange(int8range(first_seq, first_seq + blocks)))
) WITH (fillfactor = 50); -- room on each page for those in-place updates
-- Sealed material is random: compressing it is wasted work. Stored out of line (TOAST) without compression.
ALTER TABLE key_chunk ALTER COLUMN sealed SET STORAGE EXTERNAL;
-- Claims walk this partial index: chunks with owned, free, deliverable positions, oldest first.
CREATE INDEX key_chunk_free ON key_chunk (link_id, first_seq)
  WHERE owned AND confirmed AND NOT set_aside AND NOT exhausted;

-- Ranges of a link's positions whose material was destroyed, waiting to be erased from their chunk's envelope.
-- Written in the same statement as the destruction (an INSERT: no lock on the chunk, which deliveries use).
CREATE TABLE erase_queue (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  link_id   text NOT NULL REFERENCES link,
  seqs      int8multirange NOT NULL,
  queued_at timestamptz NOT NULL DEFAULT now()
);

-- Keys name their positions on their link as a multirange (ascending: the key's material is its positions'
-- material in that order). A relayed key's own envelope has none. No position is ever bound to two keys: the
-- database refuses it, at the owner (which hands positions out in order) and at the peer (which binds what the
-- owner chose).
ALTER TABLE qkd_key ADD COLUMN seqs int8multirange;
ALTER TABLE qkd_key ADD CONSTRAINT qkd_key_positions_once EXCLUDE USING gist (link_id WITH =, seqs WITH &&);
ALTER TABLE qkd_key ADD CHECK (seqs IS NULL OR NOT isempty(seqs));
CREATE INDEX qkd_key_reserved ON qkd_key (link_id) WHERE state = 'RESERVED';
-- The eraser compacts ended keys (their custody lives on in audit_event).
CREATE INDEX qkd_key_ended ON qkd_key (destroyed_at) WHERE destroyed_at IS NOT NULL;
ALTER TABLE key_slave DROP CONSTRAINT key_slave_key_id_fkey;
ALTER TABLE key_slave ADD FOREIGN KEY (key_id) REFERENCES qkd_key ON DELETE CASCADE;

-- Device refs are recorded at both ends now (the secondary tells a retried announcement from a new one by its
-- refs, not by positions, whose chunk may be gone); the expiry job drops them after a day.
CREATE INDEX link_ref_stored_at ON link_ref (stored_at);

DROP TABLE key_block;

-- Down Migration
-- Irreversible on purpose, like 0001.
