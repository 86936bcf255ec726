-- Up Migration
-- "No position is ever bound to two keys", held by each chunk instead of by an index over every key
-- (docs/storage.md, "Handing material out").
--
-- 0003 refused double binding with one exclusion constraint over every key's positions. Measured on the bench, its
-- GiST index cost more database CPU than everything else a delivery writes (about 80 µs of 140 µs per key). Each
-- chunk now records what has been taken from it, and the statement that records keys (src/store/bind-keys.ts)
-- checks each position against that record and adds it, in the same statement:
-- - at the owner, the cursor: positions are handed out in order and the cursor only moves forward; the statement
--   checks that the owned positions it binds are exactly those its cursor moves pass over;
-- - at the peer, which binds the positions the owner names, `bound`: a position already bound (or destroyed, in
--   `gone`) is refused, so a reservation named twice takes nothing.
ALTER TABLE key_chunk ADD COLUMN bound int8multirange NOT NULL DEFAULT '{}';
UPDATE key_chunk k
   SET bound = COALESCE((SELECT range_agg(q.seqs) FROM qkd_key q
                          WHERE q.link_id = k.link_id AND q.seqs && int8range(k.first_seq, k.first_seq + k.blocks)), '{}')
               * int8multirange(int8range(k.first_seq, k.first_seq + k.blocks))
 WHERE NOT k.owned;
ALTER TABLE key_chunk
  ADD CONSTRAINT key_chunk_bound_inside CHECK (bound <@ int8multirange(int8range(first_seq, first_seq + blocks))),
  ADD CONSTRAINT key_chunk_bound_at_the_peer CHECK (NOT owned OR isempty(bound));
ALTER TABLE qkd_key DROP CONSTRAINT qkd_key_positions_once;

-- Down Migration
-- Irreversible on purpose, like 0001.
