import type { DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';

/**
 * The queries of key delivery. Each function runs on a client inside a transaction the caller owns
 * (`withTransaction`), so claiming material, changing its state and writing the audit event commit together.
 */

export interface StoredBlock {
  seq: string;
  wrapped: Buffer;
}

/**
 * Locks up to `count` AVAILABLE blocks of the link that this KME owns, oldest first. Rows another transaction holds are skipped, not
 * waited for: concurrent requests never block each other and never see the same block. Returns fewer rows when
 * the pool has fewer; the caller then rolls back.
 */
export async function claimAvailableBlocks(c: DbClient, linkId: string, count: number): Promise<StoredBlock[]> {
  // ORDER BY names the column, not the text alias of the same name: ordering by the alias would sort every
  // available row as text instead of walking the partial index.
  const { rows } = await c.query(
    `SELECT seq::text AS seq, wrapped FROM key_block
      WHERE link_id = $1 AND state = 'AVAILABLE' AND owned
      ORDER BY key_block.seq LIMIT $2 FOR UPDATE SKIP LOCKED`,
    [linkId, count],
  );
  return rows as StoredBlock[];
}

export interface SlaveRow {
  keyId: string;
  saeId: string;
  delivered: boolean;
  masterSaeId: string;
  sizeBits: number;
  linkId: string;
  keyState: string;
  originKmeId: string;
  expired: boolean;
}

/**
 * Locks every slave row of the given keys (in key_ID, SAE order, so concurrent requests for overlapping keys
 * cannot deadlock). Holding them, the caller sees the final word on who still waits for each key, which is
 * what decides when the material can be erased.
 */
export async function lockSlaveRows(c: DbClient, keyIds: string[]): Promise<SlaveRow[]> {
  const { rows } = await c.query(
    `SELECT s.key_id::text AS "keyId", s.sae_id AS "saeId", s.delivered_at IS NOT NULL AS delivered,
            k.master_sae_id AS "masterSaeId", k.size_bits AS "sizeBits", k.link_id AS "linkId", k.state AS "keyState",
            k.origin_kme_id AS "originKmeId", k.expires_at <= now() AS expired
       FROM key_slave s JOIN qkd_key k USING (key_id)
      WHERE s.key_id = ANY($1::uuid[])
      ORDER BY s.key_id, s.sae_id
        FOR UPDATE OF s`,
    [keyIds],
  );
  return rows as SlaveRow[];
}

/** Where a key's material is: blocks of a link (a position each), or a relayed key's own envelope (no seq). */
export interface KeyMaterial {
  keyId: string;
  linkId: string;
  /** The block's position; undefined for a relayed key's own envelope. */
  seq?: string;
  wrapped: Buffer;
}

/** The material of the given keys: their blocks in key_ID then part order, or a relayed key's envelope. */
export async function materialOfKeys(c: DbClient, keyIds: string[]): Promise<KeyMaterial[]> {
  const { rows } = await c.query(
    `SELECT key_id::text AS "keyId", link_id AS "linkId", seq::text AS seq, wrapped, key_part AS part FROM key_block
      WHERE key_id = ANY($1::uuid[]) AND wrapped IS NOT NULL
     UNION ALL
     SELECT key_id::text, link_id, NULL, wrapped, 0 FROM qkd_key WHERE key_id = ANY($1::uuid[]) AND wrapped IS NOT NULL
      ORDER BY 1, 5`,
    [keyIds],
  );
  return (rows as Array<KeyMaterial & { seq: string | null }>).map((r) => ({
    keyId: r.keyId,
    linkId: r.linkId,
    wrapped: r.wrapped,
    ...(r.seq === null ? {} : { seq: r.seq }),
  }));
}

/**
 * Marks the keys delivered to one slave; for the keys no other slave still waits for, erases the material
 * (ciphertext set to NULL, blocks DESTROYED) in the same statement. Audits both.
 */
export async function recordSlaveDelivery(
  c: DbClient,
  d: { slaveSaeId: string; keyIds: string[]; destroyKeyIds: string[]; auditBodies: string[] },
): Promise<void> {
  const { rows } = await c.query(
    `WITH got AS (
       UPDATE key_slave SET delivered_at = now()
        WHERE key_id = ANY($1::uuid[]) AND sae_id = $2 AND delivered_at IS NULL
       RETURNING key_id),
     pending AS (
       UPDATE qkd_key SET slaves_pending = slaves_pending - 1,
              state = CASE WHEN key_id = ANY($3::uuid[]) THEN 'DESTROYED' ELSE state END,
              destroyed_at = CASE WHEN key_id = ANY($3::uuid[]) THEN now() ELSE destroyed_at END,
              wrapped = CASE WHEN key_id = ANY($3::uuid[]) THEN NULL ELSE wrapped END,
              kek_version = CASE WHEN key_id = ANY($3::uuid[]) THEN NULL ELSE kek_version END
        WHERE key_id IN (SELECT key_id FROM got)),
     erased AS (
       UPDATE key_block SET state = 'DESTROYED', wrapped = NULL, kek_version = NULL
        WHERE key_id = ANY($3::uuid[])),

     audited AS (${insertAuditSql(4)})
     SELECT count(*)::int AS got FROM got`,
    [d.keyIds, d.slaveSaeId, d.destroyKeyIds, d.auditBodies],
  );
  const got = (rows[0] as { got: number }).got;
  if (got !== d.keyIds.length) throw new Error(`expected to deliver ${d.keyIds.length} keys to the slave, got ${got}`);
}
