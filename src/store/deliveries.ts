import type { DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';
import { chunksOfKeys, type ChunkRow } from './chunks.js';
import { queueErasureSql } from './keys.js';
import { fromMultirange } from './positions.js';

/**
 * The queries of key delivery. Each function runs on a client inside a transaction the caller owns
 * (`withTransaction`), so claiming material, changing its state and writing the audit event commit together.
 */

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

/** Where a key's material is: positions of its link (ascending), or a relayed key's own envelope. */
export interface KeyMaterial {
  keyId: string;
  linkId: string;
  seqs: string[];
  wrapped?: Buffer;
}

/** The material of the given keys (those that still hold any), and the chunks their positions are in. */
export async function materialOfKeys(c: DbClient, keyIds: string[]): Promise<{ keys: KeyMaterial[]; chunks: ChunkRow[] }> {
  const { rows } = await c.query(
    `SELECT key_id::text AS "keyId", link_id AS "linkId", seqs::text AS seqs, wrapped FROM qkd_key
      WHERE key_id = ANY($1::uuid[]) AND (seqs IS NOT NULL OR wrapped IS NOT NULL)`,
    [keyIds],
  );
  const keys = (rows as Array<{ keyId: string; linkId: string; seqs: string | null; wrapped: Buffer | null }>).map((r) => ({
    keyId: r.keyId,
    linkId: r.linkId,
    seqs: r.seqs === null ? [] : fromMultirange(r.seqs),
    ...(r.wrapped ? { wrapped: r.wrapped } : {}),
  }));
  const chunks = keys.some((k) => k.seqs.length > 0) ? await chunksOfKeys(c, keyIds) : [];
  return { keys, chunks };
}

/**
 * Marks the keys delivered to one slave; for the keys no other slave still waits for, destroys the material
 * (a relayed key's envelope set to NULL, positions queued for erasure from their chunks) in the same statement.
 * Audits both.
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
        WHERE key_id IN (SELECT key_id FROM got)
       RETURNING key_id, link_id, seqs),
     erased AS (${queueErasureSql('(SELECT * FROM pending WHERE key_id = ANY($3::uuid[]))')}),

     audited AS (${insertAuditSql(4)})
     SELECT count(*)::int AS got FROM got`,
    [d.keyIds, d.slaveSaeId, d.destroyKeyIds, d.auditBodies],
  );
  const got = (rows[0] as { got: number }).got;
  if (got !== d.keyIds.length) throw new Error(`expected to deliver ${d.keyIds.length} keys to the slave, got ${got}`);
}
