import type { ChunkIdentity } from '../barrier/barrier.js';
import { named, type DbClient, type Queryable } from './db.js';
import { positionsByLink, toMultirange } from './positions.js';

/**
 * Reading and claiming chunks of material (migrations/0003_chunks.sql). Claims run on a client inside a
 * transaction the caller owns. Lock order: chunks are always locked in ascending position order within a link,
 * and a transaction only ever waits for a chunk above every chunk it already holds, so claims, relays and the
 * eraser cannot deadlock.
 */

/** Longest chunk the schema allows; lookups by position search this far back. */
export const MAX_CHUNK_BLOCKS = 4096;

/** A stored chunk: its identity and envelope. */
export interface ChunkRow {
  id: ChunkIdentity;
  sealed: Buffer;
}

/** Free positions of owned chunks, claimed (locked) in order by one transaction. */
export interface OwnedClaim {
  linkId: string;
  chunks: ChunkRow[];
  /** The free positions found, ascending: a prefix of them is used, the rest stays free (`cursorsAfter`). */
  seqs: string[];
  /** Where each claimed chunk's cursor stood. */
  cursors: Array<{ firstSeq: string; nextFree: number; blocks: number }>;
}

/**
 * Locks owned, confirmed chunks with free positions, lowest first, until `count` free positions are found (fewer
 * when the pool has fewer). Chunks another transaction holds are skipped, so concurrent claims use different chunks;
 * only when nothing unlocked is left does a claim wait for a held chunk (whose holder may leave positions free).
 * Moves no cursor: `cursorsAfter` says where the cursors go once the caller knows how many positions it used.
 */
export async function claimOwned(c: DbClient, linkId: string, count: number): Promise<OwnedClaim> {
  const claim: OwnedClaim = { linkId, chunks: [], seqs: [], cursors: [] };
  let after = '-1';
  while (claim.seqs.length < count) {
    const row = (await nextFreeChunk(c, linkId, after, 'SKIP LOCKED')) ?? (await nextFreeChunk(c, linkId, after, ''));
    if (!row) break;
    const first = BigInt(row.first);
    const take = Math.min(row.blocks - row.next_free, count - claim.seqs.length);
    for (let i = 0; i < take; i++) claim.seqs.push(String(first + BigInt(row.next_free + i)));
    claim.chunks.push({ id: { linkId, firstSeq: row.first, blocks: row.blocks }, sealed: row.sealed });
    claim.cursors.push({ firstSeq: row.first, nextFree: row.next_free, blocks: row.blocks });
    after = row.first;
  }
  return claim;
}

async function nextFreeChunk(c: DbClient, linkId: string, after: string, wait: 'SKIP LOCKED' | '') {
  const { rows } = await c.query(
    named(
      `next-free-chunk-${wait ? 'skip' : 'wait'}`,
      `SELECT first_seq::text AS first, blocks, next_free, sealed FROM key_chunk
        WHERE link_id = $1 AND owned AND confirmed AND NOT set_aside AND NOT exhausted AND first_seq > $2
        ORDER BY first_seq LIMIT 1 FOR UPDATE ${wait}`,
      [linkId, after],
    ),
  );
  return rows[0] as { first: string; blocks: number; next_free: number; sealed: Buffer } | undefined;
}

/** A chunk's cursor moved by a claim: positions [firstSeq + from, firstSeq + nextFree) were taken. */
export interface CursorMove {
  linkId: string;
  firstSeq: string;
  from: number;
  nextFree: number;
}

/** The cursors of a claim after its first `used` positions were taken (only the chunks that moved). */
export function cursorsAfter(claim: OwnedClaim, used: number): CursorMove[] {
  const out: CursorMove[] = [];
  let left = used;
  for (const cur of claim.cursors) {
    if (left <= 0) break;
    const take = Math.min(cur.blocks - cur.nextFree, left);
    left -= take;
    out.push({ linkId: claim.linkId, firstSeq: cur.firstSeq, from: cur.nextFree, nextFree: cur.nextFree + take });
  }
  return out;
}

/**
 * The chunks holding these positions, read without a lock: the caller's positions cannot change meanwhile (their
 * keys' rows are locked) or are checked afterwards (the peer's binding, src/store/bind-keys.ts). Each range is
 * looked up through the primary key: the last chunk starting at or before it, and any starting inside it — a handful
 * of index entries, where a search back over MAX_CHUNK_BLOCKS positions read sixteen chunks' worth. The chunks found
 * are read in a LATERAL sub-select that its LIMIT keeps from being folded into a join: a primary-key lookup each,
 * whatever the generic plan estimates (a plain join became a scan of every chunk of the link).
 */
export async function chunksHolding(c: Queryable, positions: Array<{ linkId: string; seqs: readonly string[] }>): Promise<ChunkRow[]> {
  const byLink = positionsByLink(positions);
  if (byLink.size === 0) return [];
  const { rows } = await c.query(
    named(
      'chunks-holding',
      `WITH r AS (SELECT t.link, r FROM unnest($1::text[], $2::int8multirange[]) AS t(link, seqs), unnest(t.seqs) AS r),
       ids AS (
         SELECT DISTINCT k.link_id, k.first_seq
           FROM r, LATERAL (
             (SELECT link_id, first_seq, blocks FROM key_chunk c
               WHERE c.link_id = r.link AND c.first_seq <= lower(r.r) ORDER BY c.first_seq DESC LIMIT 1)
             UNION ALL
             (SELECT link_id, first_seq, blocks FROM key_chunk c
               WHERE c.link_id = r.link AND c.first_seq > lower(r.r) AND c.first_seq < upper(r.r))) AS k
          WHERE k.first_seq + k.blocks > lower(r.r))
       SELECT ids.link_id AS link, ids.first_seq::text AS first, k.blocks, k.sealed
         FROM ids, LATERAL (SELECT c.blocks, c.sealed FROM key_chunk c WHERE c.link_id = ids.link_id AND c.first_seq = ids.first_seq LIMIT 1) AS k
        ORDER BY ids.link_id, ids.first_seq`,
      [[...byLink.keys()], [...byLink.values()].map(toMultirange)],
    ),
  );
  return (rows as Array<{ link: string; first: string; blocks: number; sealed: Buffer }>).map((r) => ({
    id: { linkId: r.link, firstSeq: r.first, blocks: r.blocks },
    sealed: r.sealed,
  }));
}
