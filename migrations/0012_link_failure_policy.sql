-- Up Migration
-- What a pair's keys do when its QKD link cannot serve them (docs/operators.md, "Policies"): 'fail_closed' (the
-- default, and all a KME did before) answers 503; 'pqc_fallback' lets the master's KME make the key and send it to
-- the slave's KME encapsulated with ML-KEM-768+X25519. Both KMEs of the pair must allow it, each by its own policy.
-- Existing policies keep failing closed.
ALTER TABLE pair_policy
  ADD COLUMN link_failure text NOT NULL DEFAULT 'fail_closed' CHECK (link_failure IN ('fail_closed', 'pqc_fallback'));

-- Down Migration
ALTER TABLE pair_policy DROP COLUMN link_failure;
