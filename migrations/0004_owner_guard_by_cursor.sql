-- Up Migration
-- "No position is ever bound to two keys", enforced where it is cheap (docs/storage.md, "Handing material out").
--
-- 0003 refused double binding with one exclusion constraint over every key's positions. Measured on the bench, its
-- GiST index cost more database CPU than everything else a delivery writes (about 80 µs of 140 µs per key).
-- The two ends need different guards:
-- - The owner hands positions out in order from each chunk's cursor, which only moves forward. The statement that
--   records keys (src/store/keys.ts bindKeys) now checks, in the database, that the positions it binds on owned
--   material are exactly the positions its cursor moves passed over: every owned position is bound at most once
--   because a cursor passes it at most once. No index entry per key.
-- - The peer binds positions the owner named; only a constraint can refuse the same position named twice (a retried
--   or forged reservation). The exclusion constraint stays, on the peer's keys only.
ALTER TABLE qkd_key ADD COLUMN peer_material boolean NOT NULL DEFAULT false;
UPDATE qkd_key q SET peer_material = true
  FROM link l
 WHERE l.link_id = q.link_id AND q.seqs IS NOT NULL AND q.origin_kme_id <> l.local_kme_id;
ALTER TABLE qkd_key DROP CONSTRAINT qkd_key_positions_once;
ALTER TABLE qkd_key ADD CONSTRAINT qkd_key_peer_positions_once
  EXCLUDE USING gist (link_id WITH =, seqs WITH &&) WHERE (peer_material);

-- Down Migration
-- Irreversible on purpose, like 0001.
