import type { Db, DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';

/**
 * Queries on a link's pool of material: registration, exact counts, ingest.
 * `pool_count` is sharded so that concurrent claims do not queue on one counter row; every change of a block's
 * AVAILABLE state adjusts one shard in the same statement, so the sum is exact in every snapshot.
 */
export const POOL_SHARDS = 16;

export const randomShard = (): number => Math.floor(Math.random() * POOL_SHARDS);

export interface LinkRow {
  linkId: string;
  localKmeId: string;
  peerKmeId: string;
  blockBits: number;
}

/**
 * Registers a link on first start; on later starts checks that its block size still matches the config
 * (blocks already stored cannot change size). Idempotent and safe from several replicas at once.
 */
export async function ensureLink(db: Db, link: LinkRow): Promise<LinkRow> {
  await db.query(
    `WITH l AS (
       INSERT INTO link (link_id, local_kme_id, peer_kme_id, block_bits) VALUES ($1, $2, $3, $4)
       ON CONFLICT (link_id) DO NOTHING RETURNING link_id)
     INSERT INTO pool_count (link_id, shard)
       SELECT $1, s FROM generate_series(0, ${POOL_SHARDS - 1}) AS s WHERE EXISTS (SELECT 1 FROM l)`,
    [link.linkId, link.localKmeId, link.peerKmeId, link.blockBits],
  );
  const { rows } = await db.query(
    'SELECT local_kme_id, peer_kme_id, block_bits FROM link WHERE link_id = $1',
    [link.linkId],
  );
  const row = rows[0] as { local_kme_id: string; peer_kme_id: string; block_bits: number };
  return { linkId: link.linkId, localKmeId: row.local_kme_id, peerKmeId: row.peer_kme_id, blockBits: row.block_bits };
}

/** Blocks deliverable on the link right now. One round trip over 16 rows, whatever the pool size. */
export async function availableBlocks(db: Db | DbClient, linkId: string): Promise<number> {
  const { rows } = await db.query(
    'SELECT COALESCE(sum(available), 0)::bigint::text AS n FROM pool_count WHERE link_id = $1',
    [linkId],
  );
  return Number((rows[0] as { n: string }).n);
}

/** The next position in the link's key stream this KME has not stored yet (0 for a new link). */
export async function nextSeq(db: Db, linkId: string): Promise<string> {
  const { rows } = await db.query(
    'SELECT COALESCE(max(seq) + 1, 0)::text AS next FROM key_block WHERE link_id = $1',
    [linkId],
  );
  return (rows[0] as { next: string }).next;
}

/**
 * Stores sealed blocks as AVAILABLE, adjusts the count and writes the ingest audit event, in one statement.
 * A block position that is already stored makes the whole statement fail (primary key): material is never
 * overwritten.
 */
export async function insertBlocks(
  db: Db,
  linkId: string,
  blocks: ReadonlyArray<{ seq: string; wrapped: Buffer; kekVersion: number }>,
  auditBodies: string[],
): Promise<void> {
  await db.query(
    `WITH ins AS (
       INSERT INTO key_block (link_id, seq, state, wrapped, kek_version)
       SELECT $1, t.seq, 'AVAILABLE', t.wrapped, t.kek
         FROM unnest($2::bigint[], $3::bytea[], $4::int[]) AS t(seq, wrapped, kek)
       RETURNING 1),
     counted AS (
       UPDATE pool_count SET available = available + (SELECT count(*) FROM ins)
        WHERE link_id = $1 AND shard = $5),
     audited AS (${insertAuditSql(6)})
     SELECT count(*)::int AS n FROM ins`,
    [
      linkId,
      blocks.map((b) => b.seq),
      blocks.map((b) => b.wrapped),
      blocks.map((b) => b.kekVersion),
      randomShard(),
      auditBodies,
    ],
  );
}
