import type { ChunkIdentity } from '../barrier/barrier.js';
import { byteaArray, named, type Db, type DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';

/**
 * Queries on a link's pool of material: registration, exact counts, ingest at both ends of a link.
 *
 * `pool_count` is sharded so that concurrent claims do not queue on one counter row. `available` counts the
 * AVAILABLE blocks this KME owns (what it can hand out: stored_key_count), `ingested` the owned blocks stored but
 * not yet confirmed by the peer (they count towards the pool cap). Every change of those states adjusts one shard
 * in the same statement, so the sums are exact in every snapshot.
 */
export const POOL_SHARDS = 16;

/**
 * The shard the next counting statement adjusts: each call the next one, from a random start per process. A
 * statement holds its shard's row lock until its transaction commits, so transactions in flight at once in this
 * process never wait for each other's counter (a random pick collided in one transaction of sixteen, each wait
 * lasting a whole commit); other processes (replicas) start elsewhere.
 */
export const nextShard = (() => {
  let next = Math.floor(Math.random() * POOL_SHARDS);
  return (): number => (next = (next + 1) % POOL_SHARDS);
})();

export interface LinkRow {
  linkId: string;
  localKmeId: string;
  /** The local KME for a loopback link. */
  peerKmeId: string;
  primaryKmeId: string;
  blockBits: number;
}

/**
 * Registers a link on first start; returns what the database holds, so the caller can refuse to start when the
 * config changed something stored material depends on (block size, ends, primary). Idempotent and safe from
 * several replicas at once.
 */
export async function ensureLink(db: Db, link: LinkRow): Promise<LinkRow> {
  await db.query(
    `WITH l AS (
       INSERT INTO link (link_id, local_kme_id, peer_kme_id, primary_kme_id, block_bits) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (link_id) DO NOTHING RETURNING link_id)
     INSERT INTO pool_count (link_id, shard)
       SELECT $1, s FROM generate_series(0, ${POOL_SHARDS - 1}) AS s WHERE EXISTS (SELECT 1 FROM l)`,
    [link.linkId, link.localKmeId, link.peerKmeId, link.primaryKmeId, link.blockBits],
  );
  const { rows } = await db.query(
    'SELECT local_kme_id, peer_kme_id, primary_kme_id, block_bits FROM link WHERE link_id = $1',
    [link.linkId],
  );
  const row = rows[0] as { local_kme_id: string; peer_kme_id: string; primary_kme_id: string; block_bits: number };
  return {
    linkId: link.linkId,
    localKmeId: row.local_kme_id,
    peerKmeId: row.peer_kme_id,
    primaryKmeId: row.primary_kme_id,
    blockBits: row.block_bits,
  };
}

export interface PoolCounts {
  /** Owned AVAILABLE blocks: what this KME can hand out now. */
  available: number;
  /** Owned blocks stored but not yet confirmed by the peer. */
  ingested: number;
}

/** The link's counts. One round trip over 16 rows, whatever the pool size. */
export async function poolCounts(db: Db | DbClient, linkId: string): Promise<PoolCounts> {
  const { rows } = await db.query(
    named(
      'pool-counts',
      `SELECT COALESCE(sum(available), 0)::bigint::text AS a, COALESCE(sum(ingested), 0)::bigint::text AS i
         FROM pool_count WHERE link_id = $1`,
      [linkId],
    ),
  );
  const r = rows[0] as { a: string; i: string };
  return { available: Number(r.a), ingested: Number(r.i) };
}

/** Blocks deliverable on the link right now (owned and AVAILABLE). */
export async function availableBlocks(db: Db | DbClient, linkId: string): Promise<number> {
  return (await poolCounts(db, linkId)).available;
}

/** The next position in the link's key stream this KME has not stored yet (0 for a new link). */
export async function nextSeq(db: Db, linkId: string): Promise<string> {
  const { rows } = await db.query('SELECT next_seq::text AS next FROM link WHERE link_id = $1', [linkId]);
  return (rows[0] as { next: string } | undefined)?.next ?? '0';
}

/**
 * Which of these device refs this KME stored already: a device may offer a key again after a crash, and the peer
 * may announce the same refs again after a lost reply. Refs are kept a day after they were stored (the expiry job
 * drops older ones), far longer than either can happen.
 */
export async function storedRefs(db: Db, linkId: string, refs: string[]): Promise<Set<string>> {
  if (refs.length === 0) return new Set();
  const { rows } = await db.query('SELECT ref FROM link_ref WHERE link_id = $1 AND ref = ANY($2::text[])', [linkId, refs]);
  return new Set((rows as Array<{ ref: string }>).map((r) => r.ref));
}

/** A device key as stored: its ref, where its blocks start and which of them this end owns. */
export interface StoredRef {
  ref: string;
  firstSeq: string;
  blocks: number;
  /** Positions [firstSeq, firstSeq + ownerSplit) are the primary's, the rest the secondary's. */
  ownerSplit: number;
}

/** A sealed chunk ready to store (src/pool/chunking.ts cuts device keys into chunks). */
export interface SealedChunkRow {
  firstSeq: string;
  blocks: number;
  sealed: Buffer;
  kekVersion: number;
  owned: boolean;
}

/**
 * Stores sealed chunks read from this end's device (primary or loopback side), their device refs, the count, the
 * link's next position and the ingest audit event, in one statement. Chunks are confirmed (AVAILABLE) on a loopback
 * link and not yet (INGESTED) at a primary, whose peer has not confirmed. A position or ref already stored fails the
 * whole statement: material is never overwritten, and never stored twice.
 */
export async function insertIngested(
  db: Db,
  linkId: string,
  state: 'AVAILABLE' | 'INGESTED',
  refs: StoredRef[],
  chunks: SealedChunkRow[],
  auditBodies: string[],
): Promise<void> {
  const owned = chunks.reduce((n, c) => n + (c.owned ? c.blocks : 0), 0);
  const sealed = byteaArray(chunks.map((c) => c.sealed), 15);
  const next = chunks.reduce((n, c) => (BigInt(c.firstSeq) + BigInt(c.blocks) > n ? BigInt(c.firstSeq) + BigInt(c.blocks) : n), 0n);
  await db.query(
    `WITH r AS (
       INSERT INTO link_ref (link_id, ref, first_seq, blocks, owner_split, announced)
       SELECT $1, t.ref, t.first, t.blocks, t.split, $2 = 'AVAILABLE'
         FROM unnest($3::text[], $4::bigint[], $5::int[], $6::int[]) AS t(ref, first, blocks, split)),
     ins AS (
       INSERT INTO key_chunk (link_id, first_seq, blocks, owned, confirmed, sealed, kek_version)
       SELECT $1, t.first, t.blocks, t.owned, $2 = 'AVAILABLE', t.sealed, t.kek
         FROM unnest($7::bigint[], $8::int[], ${sealed.sql}, $9::int[], $10::boolean[]) AS t(first, blocks, sealed, kek, owned)),
     counted AS (
       UPDATE pool_count SET available = available + CASE WHEN $2 = 'AVAILABLE' THEN $11::bigint ELSE 0 END,
                             ingested = ingested + CASE WHEN $2 = 'INGESTED' THEN $11::bigint ELSE 0 END
        WHERE link_id = $1 AND shard = $12),
     advanced AS (UPDATE link SET next_seq = GREATEST(next_seq, $13::bigint) WHERE link_id = $1),
     audited AS (${insertAuditSql(14)})
     SELECT 1`,
    [
      linkId,
      state,
      refs.map((r) => r.ref),
      refs.map((r) => r.firstSeq),
      refs.map((r) => r.blocks),
      refs.map((r) => r.ownerSplit),
      ...chunkColumns(chunks),
      owned,
      nextShard(),
      String(next),
      auditBodies,
      ...sealed.params,
    ],
  );
}

/** Positions, lengths, KEK versions and owners of chunks, as arrays; their envelopes go separately (byteaArray). */
function chunkColumns(chunks: SealedChunkRow[]) {
  return [chunks.map((c) => c.firstSeq), chunks.map((c) => c.blocks), chunks.map((c) => c.kekVersion), chunks.map((c) => c.owned)];
}

/**
 * Secondary side: stores the chunks of the refs the primary announced (read from this end's device by the same
 * refs) as AVAILABLE, and the refs themselves. Refs and positions already stored are left alone (a retried
 * announcement whose reply was lost), so the call is idempotent. Returns how many blocks were new.
 */
export async function insertAnnounced(
  db: Db,
  linkId: string,
  refs: StoredRef[],
  chunks: SealedChunkRow[],
  auditBodies: string[],
): Promise<number> {
  const sealed = byteaArray(chunks.map((c) => c.sealed), 12);
  const { rows } = await db.query(
    `WITH r AS (
       INSERT INTO link_ref (link_id, ref, first_seq, blocks, owner_split, announced)
       SELECT $1, t.ref, t.first, t.blocks, t.split, true
         FROM unnest($2::text[], $3::bigint[], $4::int[], $5::int[]) AS t(ref, first, blocks, split)
       ON CONFLICT (link_id, ref) DO NOTHING),
     ins AS (
       INSERT INTO key_chunk (link_id, first_seq, blocks, owned, confirmed, sealed, kek_version)
       SELECT $1, t.first, t.blocks, t.owned, true, t.sealed, t.kek
         FROM unnest($6::bigint[], $7::int[], ${sealed.sql}, $8::int[], $9::boolean[]) AS t(first, blocks, sealed, kek, owned)
       ON CONFLICT (link_id, first_seq) DO NOTHING
       RETURNING owned, blocks, first_seq + blocks AS next),
     counted AS (
       UPDATE pool_count SET available = available + (SELECT COALESCE(sum(blocks), 0) FROM ins WHERE owned)
        WHERE link_id = $1 AND shard = $10),
     advanced AS (UPDATE link SET next_seq = GREATEST(next_seq, (SELECT max(next) FROM ins)) WHERE link_id = $1 AND EXISTS (SELECT 1 FROM ins)),
     audited AS (${insertAuditSql(11)} WHERE EXISTS (SELECT 1 FROM ins))
     SELECT COALESCE(sum(blocks), 0)::int AS n FROM ins`,
    [
      linkId,
      refs.map((r) => r.ref),
      refs.map((r) => r.firstSeq),
      refs.map((r) => r.blocks),
      refs.map((r) => r.ownerSplit),
      ...chunkColumns(chunks),
      nextShard(),
      auditBodies,
      ...sealed.params,
    ],
  );
  return (rows[0] as { n: number }).n;
}

/** Device refs stored at the primary that the peer has not confirmed yet, oldest first. */
export async function unannouncedRefs(db: Db, linkId: string, limit: number): Promise<StoredRef[]> {
  const { rows } = await db.query(
    `SELECT ref, first_seq::text AS "firstSeq", blocks, owner_split AS "ownerSplit" FROM link_ref
      WHERE link_id = $1 AND NOT announced ORDER BY first_seq LIMIT $2`,
    [linkId, limit],
  );
  return rows as StoredRef[];
}

/** The chunks inside the given refs' positions (a chunk never spans device keys). */
const IN_REFS = `EXISTS (SELECT 1 FROM unnest($2::bigint[], $3::int[]) AS r(f, n) WHERE first_seq >= r.f AND first_seq < r.f + r.n)`;

/**
 * Primary side: the peer holds the material of these refs too. Their chunks become AVAILABLE (still INGESTED ones
 * only: the peer may have handed out its own share already) and the refs are marked announced; audited.
 */
export async function confirmAnnounced(db: Db, linkId: string, refs: StoredRef[], auditBodies: string[]): Promise<void> {
  await db.query(
    `WITH up AS (
       UPDATE key_chunk SET confirmed = true
        WHERE link_id = $1 AND NOT confirmed AND ${IN_REFS}
       RETURNING owned, blocks),
     refs AS (UPDATE link_ref SET announced = true WHERE link_id = $1 AND ref = ANY($4::text[])),
     counted AS (
       UPDATE pool_count SET available = available + (SELECT COALESCE(sum(blocks), 0) FROM up WHERE owned),
                             ingested = ingested - (SELECT COALESCE(sum(blocks), 0) FROM up WHERE owned)
        WHERE link_id = $1 AND shard = $5),
     audited AS (${insertAuditSql(6)})
     SELECT 1`,
    [linkId, refs.map((r) => r.firstSeq), refs.map((r) => r.blocks), refs.map((r) => r.ref), nextShard(), auditBodies],
  );
}

/**
 * Primary side: the peer's device does not have these refs and the primary gave up waiting. Their chunks, never
 * handed out, are deleted (ciphertext and all); audited.
 */
export async function destroyUnconfirmed(db: Db, linkId: string, refs: StoredRef[], auditBodies: string[]): Promise<void> {
  await db.query(
    `WITH gone AS (
       DELETE FROM key_chunk WHERE link_id = $1 AND NOT confirmed AND ${IN_REFS}
       RETURNING owned, blocks),
     refs AS (UPDATE link_ref SET announced = true WHERE link_id = $1 AND ref = ANY($4::text[])),
     counted AS (
       UPDATE pool_count SET ingested = ingested - (SELECT COALESCE(sum(blocks), 0) FROM gone WHERE owned)
        WHERE link_id = $1 AND shard = $5),
     audited AS (${insertAuditSql(6)})
     SELECT 1`,
    [linkId, refs.map((r) => r.firstSeq), refs.map((r) => r.blocks), refs.map((r) => r.ref), nextShard(), auditBodies],
  );
}

/**
 * Sets chunks aside that failed their integrity check: COMPROMISED (ciphertext kept for investigation, never handed
 * out), their free positions out of the count, audited. Only chunks not set aside yet move, so the call is
 * idempotent. Returns how many moved. Runs in its own transaction: the request that found them has rolled back.
 */
export async function setAsideChunks(db: Db, chunks: ChunkIdentity[], auditBodies: string[]): Promise<number> {
  const { rows } = await db.query(
    `WITH gone AS (
       UPDATE key_chunk k SET set_aside = true
         FROM unnest($1::text[], $2::bigint[]) AS t(link, first)
        WHERE k.link_id = t.link AND k.first_seq = t.first AND NOT k.set_aside
       RETURNING k.link_id, k.owned, k.confirmed, k.blocks - k.next_free AS free),
     counted AS (
       UPDATE pool_count p SET available = available - g.n
         FROM (SELECT link_id, sum(free) AS n FROM gone WHERE owned AND confirmed GROUP BY link_id) AS g
        WHERE p.link_id = g.link_id AND p.shard = $3),
     audited AS (${insertAuditSql(4)})
     SELECT count(*)::int AS n FROM gone`,
    [chunks.map((c) => c.linkId), chunks.map((c) => c.firstSeq), nextShard(), auditBodies],
  );
  return (rows[0] as { n: number }).n;
}
