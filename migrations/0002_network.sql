-- Up Migration
-- KMEs in a network (docs/network.md): links with a peer KME, ownership of each position of a link's key stream,
-- reservations made for a peer's master SAE, keys relayed over trusted nodes, and expiry of everything reserved.

-- The primary end of a link reads new material from its device first and tells the peer which device keys fill
-- which positions. A loopback link (peer = local) is its own primary.
ALTER TABLE link ADD COLUMN primary_kme_id text;
UPDATE link SET primary_kme_id = local_kme_id;
ALTER TABLE link ALTER COLUMN primary_kme_id SET NOT NULL;
ALTER TABLE link ADD CHECK (primary_kme_id IN (local_kme_id, peer_kme_id));

-- Every position of a paired link is owned by exactly one end, decided by the primary when the material is stored
-- and announced with it: only the owner hands it out (as a key for its own master SAEs, or as a one-time pad for a
-- relay), so masters at both ends never receive the same material and never need to ask each other first.
-- INGESTED: stored at the primary, the peer has not confirmed it holds the same material yet (never handed out).
ALTER TABLE key_block ADD COLUMN owned boolean NOT NULL DEFAULT true;
ALTER TABLE key_block ALTER COLUMN owned DROP DEFAULT;
DROP INDEX key_block_available;
CREATE INDEX key_block_available ON key_block (link_id, seq) WHERE state = 'AVAILABLE' AND owned;
-- The owner's watermark: below its lowest live owned position, the peer's unreserved copies are spent material.
CREATE INDEX key_block_live_owned ON key_block (link_id, seq)
  WHERE owned AND state IN ('INGESTED', 'AVAILABLE', 'RESERVED');
CREATE INDEX key_block_peer_available ON key_block (link_id, seq) WHERE NOT owned AND state IN ('INGESTED', 'AVAILABLE');
-- Material set aside (COMPROMISED: failed its integrity check) keeps its ciphertext for investigation.
ALTER TABLE key_block DROP CONSTRAINT key_block_check;
ALTER TABLE key_block ADD CHECK ((state IN ('DESTROYED', 'EXPIRED')) = (wrapped IS NULL));

-- Owned blocks stored but not yet confirmed by the peer count towards the pool cap (ingest back-pressure).
ALTER TABLE pool_count ADD COLUMN ingested bigint NOT NULL DEFAULT 0;

-- Device keys stored at the primary, by the device's own identifier: a device key is stored once even when the
-- reply of the INSERT that stored it was lost, and the peer fetches the same key from its device by this ref.
CREATE TABLE link_ref (
  link_id   text NOT NULL REFERENCES link,
  ref       text NOT NULL CHECK (length(ref) BETWEEN 1 AND 256),
  first_seq bigint NOT NULL CHECK (first_seq >= 0),
  blocks    integer NOT NULL CHECK (blocks > 0),
  -- positions [first_seq + owner_split, first_seq + blocks) belong to the secondary end
  owner_split integer NOT NULL CHECK (owner_split >= 0 AND owner_split <= blocks),
  announced boolean NOT NULL DEFAULT false,
  stored_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (link_id, ref)
);
CREATE INDEX link_ref_unannounced ON link_ref (link_id, first_seq) WHERE NOT announced;

-- Keys: who asked for them (the master may be at another KME), how long they may wait, and the material of a
-- key that arrived by relay (one-time-pad decrypted, then wrapped by the barrier under its key_ID).
ALTER TABLE qkd_key ADD COLUMN origin_kme_id text;
UPDATE qkd_key k SET origin_kme_id = l.local_kme_id FROM link l WHERE l.link_id = k.link_id;
ALTER TABLE qkd_key ALTER COLUMN origin_kme_id SET NOT NULL;
ALTER TABLE qkd_key ADD COLUMN expires_at timestamptz;
UPDATE qkd_key SET expires_at = created_at + interval '300 seconds';
ALTER TABLE qkd_key ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE qkd_key ADD COLUMN wrapped bytea;
ALTER TABLE qkd_key ADD COLUMN kek_version integer CHECK (kek_version > 0);
ALTER TABLE qkd_key ADD CHECK ((wrapped IS NULL) = (kek_version IS NULL));
ALTER TABLE qkd_key ADD CHECK (wrapped IS NULL OR state IN ('RESERVED', 'DELIVERED', 'COMPROMISED'));
-- A relayed key holds its own material instead of blocks of a link.
ALTER TABLE qkd_key DROP CONSTRAINT qkd_key_block_count_check;
ALTER TABLE qkd_key ADD CHECK (block_count >= 0 AND (block_count > 0 OR wrapped IS NOT NULL OR state IN ('DESTROYED', 'EXPIRED')));
ALTER TABLE qkd_key DROP CONSTRAINT qkd_key_check;
ALTER TABLE qkd_key ADD CHECK ((state IN ('DESTROYED', 'EXPIRED')) = (destroyed_at IS NOT NULL));
-- The peers a key was relayed to, so that voiding it reaches every KME that holds it.
ALTER TABLE qkd_key ADD COLUMN relayed_to text[] NOT NULL DEFAULT '{}';
CREATE INDEX qkd_key_expiry ON qkd_key (expires_at) WHERE state IN ('RESERVED', 'DELIVERED');

-- Down Migration
-- Irreversible on purpose, like 0001.
