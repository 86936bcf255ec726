-- Up Migration
-- The key pool. Storage is untrusted (DESIGN §3.1): only ciphertext, IDs and metadata live here.
-- Key material is kept in blocks of `link.block_bits` (= the ETSI default key_size); a key of `size` bits takes
-- ceil(size / block_bits) consecutive claims of blocks, and `stored_key_count` counts available blocks.

-- A QKD link whose material this KME holds. In a single-KME deployment the simulated link is a loopback
-- (peer_kme_id = local_kme_id); pairing across a real link (a later issue) adds rows with a real peer.
CREATE TABLE link (
  link_id      text PRIMARY KEY CHECK (link_id ~ '^[A-Za-z0-9._~-]{1,128}$'),
  local_kme_id text NOT NULL,
  peer_kme_id  text NOT NULL,
  block_bits   integer NOT NULL CHECK (block_bits > 0 AND block_bits % 8 = 0),
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- One block of QKD material, identified by its position in the link's key stream (identical at both ends of a
-- real link, so it is also the identity two KMEs agree on). `wrapped` is the barrier's envelope, bound to
-- (link_id, seq) as AEAD associated data, and is erased (NULL) when the block is destroyed.
CREATE TABLE key_block (
  link_id     text NOT NULL REFERENCES link,
  seq         bigint NOT NULL CHECK (seq >= 0),
  state       text NOT NULL CHECK (state IN ('INGESTED', 'AVAILABLE', 'RESERVED', 'DELIVERED', 'DESTROYED',
                                             'SUSPENDED', 'COMPROMISED', 'EXPIRED')),
  wrapped     bytea,
  kek_version integer CHECK (kek_version > 0),
  key_id      uuid,
  key_part    smallint CHECK (key_part >= 0),
  ingested_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (link_id, seq),
  -- destroyed is final and holds no material; everything else holds material and records its KEK version
  CHECK ((state = 'DESTROYED') = (wrapped IS NULL)),
  CHECK ((wrapped IS NULL) = (kek_version IS NULL)),
  -- a block bound to a key_ID is never available again
  CHECK (state <> 'AVAILABLE' OR key_id IS NULL),
  CHECK (state NOT IN ('RESERVED', 'DELIVERED') OR key_id IS NOT NULL),
  CHECK ((key_id IS NULL) = (key_part IS NULL)),
  UNIQUE (key_id, key_part)
);
-- Claims walk this partial index, so delivered rows never pile up in front of the available ones.
CREATE INDEX key_block_available ON key_block (link_id, seq) WHERE state = 'AVAILABLE';

-- Exact, cheap stored_key_count: the sum of a link's shards equals its count of AVAILABLE blocks in every
-- snapshot (every state change adjusts one shard in the same transaction). Shards keep concurrent claims from
-- queueing on one counter row.
CREATE TABLE pool_count (
  link_id   text NOT NULL REFERENCES link,
  shard     smallint NOT NULL CHECK (shard >= 0 AND shard < 16),
  available bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (link_id, shard)
);

-- A key_ID handed to a master SAE. Its material stays in its blocks until every slave has fetched it.
CREATE TABLE qkd_key (
  key_id         uuid PRIMARY KEY,
  link_id        text NOT NULL REFERENCES link,
  master_sae_id  text NOT NULL,
  size_bits      integer NOT NULL CHECK (size_bits > 0 AND size_bits % 8 = 0),
  block_count    smallint NOT NULL CHECK (block_count > 0),
  state          text NOT NULL CHECK (state IN ('RESERVED', 'DELIVERED', 'DESTROYED', 'COMPROMISED', 'EXPIRED')),
  slaves_pending integer NOT NULL CHECK (slaves_pending >= 0),
  created_at     timestamptz NOT NULL DEFAULT now(),
  destroyed_at   timestamptz,
  CHECK ((state = 'DESTROYED') = (destroyed_at IS NOT NULL))
);

-- The slaves (the path's slave and every additional slave) named in the request that produced a key.
-- Each may fetch the key exactly once (delivered_at set); the 401 rule of dec_keys reads this table.
CREATE TABLE key_slave (
  key_id       uuid NOT NULL REFERENCES qkd_key,
  sae_id       text NOT NULL,
  delivered_at timestamptz,
  PRIMARY KEY (key_id, sae_id)
);

-- The custody log. Written in the same transaction as the change it records (no audit row, no key).
-- `body` is the RFC 8785 canonical JSON of the event, exactly what the sealer of a later issue will hash.
-- Never key bytes.
CREATE TABLE audit_event (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         timestamptz NOT NULL,
  actor      text NOT NULL,
  actor_cert text,
  operation  text NOT NULL,
  outcome    text NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
  key_ids    uuid[] NOT NULL DEFAULT '{}',
  body       text NOT NULL
);
CREATE INDEX audit_event_key_ids ON audit_event USING gin (key_ids);

-- Append-only at the database level, whatever the application's role may do.
CREATE FUNCTION audit_event_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event
  FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();

-- Down Migration
-- Irreversible on purpose: the custody log must not be dropped by a migration tool.
