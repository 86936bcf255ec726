-- Up Migration
-- KEK rotation (docs/operators.md, "KEK rotation"): a new KEK version in the HSM, new material sealed under it at
-- once, a background re-wrap moving everything else, and the old version destroyed in the HSM once nothing refers
-- to it.

-- The versions this KME has used, when each came in and when it was destroyed in the HSM.
CREATE TABLE kek_version (
  version      integer PRIMARY KEY CHECK (version > 0),
  created_at   timestamptz NOT NULL DEFAULT now(),
  destroyed_at timestamptz
);
INSERT INTO kek_version (version)
  SELECT DISTINCT v FROM (SELECT kek_version AS v FROM key_chunk UNION SELECT kek_version FROM qkd_key WHERE kek_version IS NOT NULL) AS used;

-- The ML-DSA checkpoint key's seed is sealed under the KEK (audit_signing_key.sealed_secret, 4 bytes of KEK version
-- first). That table is append-only, so the re-wrap adds the seed sealed again here, and the newest seal is the one
-- used: once every key has a seal under the current version, the old version holds nothing.
CREATE TABLE audit_signing_key_seal (
  vkey          text NOT NULL REFERENCES audit_signing_key,
  kek_version   integer NOT NULL CHECK (kek_version > 0),
  sealed_secret bytea NOT NULL,
  sealed_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (vkey, kek_version)
);

-- Down Migration
DROP TABLE audit_signing_key_seal;
DROP TABLE kek_version;
