import type { Db, DbClient } from './db.js';
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

export const randomShard = (): number => Math.floor(Math.random() * POOL_SHARDS);

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
    `SELECT COALESCE(sum(available), 0)::bigint::text AS a, COALESCE(sum(ingested), 0)::bigint::text AS i
       FROM pool_count WHERE link_id = $1`,
    [linkId],
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
  const { rows } = await db.query('SELECT COALESCE(max(seq) + 1, 0)::text AS next FROM key_block WHERE link_id = $1', [
    linkId,
  ]);
  return (rows[0] as { next: string }).next;
}

/**
 * Which of these positions are stored: tells a retried ingest whether an INSERT whose reply was lost did commit,
 * and the secondary which announced positions it holds already.
 */
export async function storedPositions(db: Db, linkId: string, seqs: string[]): Promise<Set<string>> {
  const { rows } = await db.query('SELECT seq::text AS seq FROM key_block WHERE link_id = $1 AND seq = ANY($2::bigint[])', [linkId, seqs]);
  return new Set((rows as Array<{ seq: string }>).map((r) => r.seq));
}

/** Which of these device refs this KME stored already (a device may offer a key again after a crash). */
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

export interface SealedBlockRow {
  seq: string;
  wrapped: Buffer;
  kekVersion: number;
  owned: boolean;
}

/**
 * Stores sealed blocks read from this end's device (primary or loopback side), their device refs, the count and the
 * ingest audit event, in one statement. `state` is AVAILABLE on a loopback link and INGESTED at a primary (the
 * peer has not confirmed yet). A position or ref already stored fails the whole statement: material is never
 * overwritten, and never stored twice.
 */
export async function insertIngested(
  db: Db,
  linkId: string,
  state: 'AVAILABLE' | 'INGESTED',
  refs: StoredRef[],
  blocks: SealedBlockRow[],
  auditBodies: string[],
): Promise<void> {
  const owned = blocks.filter((b) => b.owned).length;
  await db.query(
    `WITH r AS (
       INSERT INTO link_ref (link_id, ref, first_seq, blocks, owner_split, announced)
       SELECT $1, t.ref, t.first, t.blocks, t.split, $2 = 'AVAILABLE'
         FROM unnest($3::text[], $4::bigint[], $5::int[], $6::int[]) AS t(ref, first, blocks, split)),
     ins AS (
       INSERT INTO key_block (link_id, seq, state, owned, wrapped, kek_version)
       SELECT $1, t.seq, $2, t.owned, t.wrapped, t.kek
         FROM unnest($7::bigint[], $8::bytea[], $9::int[], $10::boolean[]) AS t(seq, wrapped, kek, owned)),
     counted AS (
       UPDATE pool_count SET available = available + CASE WHEN $2 = 'AVAILABLE' THEN $11::bigint ELSE 0 END,
                             ingested = ingested + CASE WHEN $2 = 'INGESTED' THEN $11::bigint ELSE 0 END
        WHERE link_id = $1 AND shard = $12),
     audited AS (${insertAuditSql(13)})
     SELECT 1`,
    [
      linkId,
      state,
      refs.map((r) => r.ref),
      refs.map((r) => r.firstSeq),
      refs.map((r) => r.blocks),
      refs.map((r) => r.ownerSplit),
      blocks.map((b) => b.seq),
      blocks.map((b) => b.wrapped),
      blocks.map((b) => b.kekVersion),
      blocks.map((b) => b.owned),
      owned,
      randomShard(),
      auditBodies,
    ],
  );
}

/**
 * Secondary side: stores the blocks the primary announced (read from this end's device by the same refs) as
 * AVAILABLE. Positions already stored are left alone (a retried announcement whose reply was lost), so the call
 * is idempotent. Returns how many blocks were new.
 */
export async function insertAnnounced(
  db: Db,
  linkId: string,
  blocks: SealedBlockRow[],
  auditBodies: string[],
): Promise<number> {
  const { rows } = await db.query(
    `WITH ins AS (
       INSERT INTO key_block (link_id, seq, state, owned, wrapped, kek_version)
       SELECT $1, t.seq, 'AVAILABLE', t.owned, t.wrapped, t.kek
         FROM unnest($2::bigint[], $3::bytea[], $4::int[], $5::boolean[]) AS t(seq, wrapped, kek, owned)
       ON CONFLICT (link_id, seq) DO NOTHING
       RETURNING owned),
     counted AS (
       UPDATE pool_count SET available = available + (SELECT count(*) FROM ins WHERE owned)
        WHERE link_id = $1 AND shard = $6),
     audited AS (${insertAuditSql(7)} WHERE EXISTS (SELECT 1 FROM ins))
     SELECT count(*)::int AS n FROM ins`,
    [
      linkId,
      blocks.map((b) => b.seq),
      blocks.map((b) => b.wrapped),
      blocks.map((b) => b.kekVersion),
      blocks.map((b) => b.owned),
      randomShard(),
      auditBodies,
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

/**
 * Primary side: the peer holds the material of these refs too. Their blocks become AVAILABLE (still INGESTED ones
 * only: the peer may have handed out its own share already) and the refs are marked announced; audited.
 */
export async function confirmAnnounced(db: Db, linkId: string, refs: StoredRef[], auditBodies: string[]): Promise<void> {
  const seqs = positionsOf(refs);
  await db.query(
    `WITH up AS (
       UPDATE key_block SET state = 'AVAILABLE'
        WHERE link_id = $1 AND seq = ANY($2::bigint[]) AND state = 'INGESTED'
       RETURNING owned),
     refs AS (UPDATE link_ref SET announced = true WHERE link_id = $1 AND ref = ANY($3::text[])),
     counted AS (
       UPDATE pool_count SET available = available + (SELECT count(*) FROM up WHERE owned),
                             ingested = ingested - (SELECT count(*) FROM up WHERE owned)
        WHERE link_id = $1 AND shard = $4),
     audited AS (${insertAuditSql(5)})
     SELECT 1`,
    [linkId, seqs, refs.map((r) => r.ref), randomShard(), auditBodies],
  );
}

/**
 * Primary side: the peer's device does not have these refs and the primary gave up waiting. Their blocks, never
 * handed out, are destroyed (ciphertext erased); audited.
 */
export async function destroyUnconfirmed(db: Db, linkId: string, refs: StoredRef[], auditBodies: string[]): Promise<void> {
  const seqs = positionsOf(refs);
  await db.query(
    `WITH gone AS (
       UPDATE key_block SET state = 'DESTROYED', wrapped = NULL, kek_version = NULL
        WHERE link_id = $1 AND seq = ANY($2::bigint[]) AND state = 'INGESTED'
       RETURNING owned),
     refs AS (UPDATE link_ref SET announced = true WHERE link_id = $1 AND ref = ANY($3::text[])),
     counted AS (
       UPDATE pool_count SET ingested = ingested - (SELECT count(*) FROM gone WHERE owned)
        WHERE link_id = $1 AND shard = $4),
     audited AS (${insertAuditSql(5)})
     SELECT 1`,
    [linkId, seqs, refs.map((r) => r.ref), randomShard(), auditBodies],
  );
}

/** Every position the refs cover, in order. */
export function positionsOf(refs: ReadonlyArray<{ firstSeq: string; blocks: number }>): string[] {
  const out: string[] = [];
  for (const r of refs) {
    const first = BigInt(r.firstSeq);
    for (let i = 0; i < r.blocks; i++) out.push(String(first + BigInt(i)));
  }
  return out;
}

/**
 * Sets blocks aside that failed their integrity check: COMPROMISED (ciphertext kept for investigation, never handed
 * out), out of the count, audited. Only still-AVAILABLE blocks move, so the call is idempotent. Returns how many
 * moved. Runs in its own transaction: the request that found them has rolled back.
 */
export async function setAsideBlocks(db: Db, blocks: Array<{ linkId: string; seq: string }>, auditBodies: string[]): Promise<number> {
  const { rows } = await db.query(
    `WITH gone AS (
       UPDATE key_block b SET state = 'COMPROMISED'
         FROM unnest($1::text[], $2::bigint[]) AS t(link, seq)
        WHERE b.link_id = t.link AND b.seq = t.seq AND b.state = 'AVAILABLE'
       RETURNING b.link_id, b.owned),
     counted AS (
       UPDATE pool_count p SET available = available - g.n
         FROM (SELECT link_id, count(*) AS n FROM gone WHERE owned GROUP BY link_id) AS g
        WHERE p.link_id = g.link_id AND p.shard = $3),
     audited AS (${insertAuditSql(4)})
     SELECT count(*)::int AS n FROM gone`,
    [blocks.map((b) => b.linkId), blocks.map((b) => b.seq), randomShard(), auditBodies],
  );
  return (rows[0] as { n: number }).n;
}
