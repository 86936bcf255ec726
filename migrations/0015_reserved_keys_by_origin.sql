-- Up Migration
-- The ownership watermark (src/peers/link-sync.ts) asks every second, per link, for the lowest position of the keys
-- this KME reserved and has not settled yet. At a slave's KME most reserved keys are the peer's (waiting for their
-- slave's dec_keys: 150,000 of them in the bench), so an index of every reserved key of the link leaves the
-- question to a scan of them; the planner chose a parallel scan of the whole key table instead (40–90 ms a statement,
-- two worker processes each time, seen on the bench). This index answers it with its first entry.
CREATE INDEX qkd_key_reserved_by_origin ON qkd_key (link_id, origin_kme_id, lower(seqs)) WHERE state = 'RESERVED';
DROP INDEX qkd_key_reserved;

-- Down Migration
CREATE INDEX qkd_key_reserved ON qkd_key (link_id) WHERE state = 'RESERVED';
DROP INDEX qkd_key_reserved_by_origin;
