-- Up Migration
-- The link-failure fallback (docs/operators.md, "When a link fails"): a pair whose policy says pqc_fallback gets keys
-- the master's KME generated and sent to the slave's KME encapsulated with ML-KEM-768+X25519, when the pair's QKD pool
-- cannot serve. Every key row says where its material came from; ETSI answers and custody events say it too.
ALTER TABLE qkd_key ADD COLUMN origin text NOT NULL DEFAULT 'qkd' CHECK (origin IN ('qkd', 'pqc_fallback'));
-- A fallback key has no blocks on its link: its material is its own envelope until it ends.
ALTER TABLE qkd_key ADD CONSTRAINT qkd_key_fallback_has_no_blocks CHECK (origin = 'qkd' OR seqs IS NULL);

-- Since when the link's pairs get fallback keys (NULL: QKD material). Set with a `fallback` event (change: start)
-- when the first fallback key is made, cleared with one (change: end) when QKD material serves again.
ALTER TABLE link ADD COLUMN fallback_since timestamptz;

-- Down Migration
ALTER TABLE link DROP COLUMN fallback_since;
ALTER TABLE qkd_key DROP CONSTRAINT qkd_key_fallback_has_no_blocks;
ALTER TABLE qkd_key DROP COLUMN origin;
