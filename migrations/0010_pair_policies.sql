-- Up Migration
-- Policies per SAE pair (docs/operators.md, "Policies"): how long a pair's keys wait for their slaves, the pool level
-- below which the KME warns, how many keys a minute the pair may take, and the tags recorded on every key delivered
-- under it. A pair is unordered (stored with sae_a < sae_b): the policy holds whichever of the two is the master.
-- Seeded from the config file at every start (source 'config') and changed by operators (source 'admin'); every
-- change is a `policy` event of the custody log, in the same transaction.
CREATE TABLE pair_policy (
  sae_a               text NOT NULL CHECK (sae_a ~ '^[A-Za-z0-9._~-]{1,64}$'),
  sae_b               text NOT NULL CHECK (sae_b ~ '^[A-Za-z0-9._~-]{1,64}$'),
  key_ttl_seconds     integer CHECK (key_ttl_seconds BETWEEN 1 AND 30 * 86400),
  min_pool_keys       integer CHECK (min_pool_keys >= 0),
  max_keys_per_minute integer CHECK (max_keys_per_minute > 0),
  tags                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object'),
  source              text NOT NULL CHECK (source IN ('config', 'admin')),
  changed_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (sae_a, sae_b),
  CHECK (sae_a < sae_b)
);

-- Down Migration
DROP TABLE pair_policy;
