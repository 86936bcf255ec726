import { named, type DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';
import { queueErasureSql } from './keys.js';
import { fromMultirange } from './positions.js';
import type { KeyOrigin } from '../keys/key-origin.js';

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
  /** An operator holds the key (kms key suspend): no slave gets it until it is resumed. */
  held: boolean;
  /** Where the key's material came from: QKD, or the link-failure fallback. */
  origin: KeyOrigin;
}

/** Where a key's material is: positions of its link (ascending), or a relayed key's own envelope. */
export interface KeyMaterial {
  keyId: string;
  linkId: string;
  seqs: string[];
  wrapped?: Buffer;
}

/**
 * Locks the rows of the given keys (in key_ID order, so concurrent requests for overlapping keys cannot deadlock) and
 * lists their slaves, one row per key and slave, with where each key's material is (keys whose material is gone have
 * none). Holding the rows, the caller sees the final word on who still waits for each key, which is what decides
 * when the material can be erased.
 */
export async function lockSlaveRows(c: DbClient, keyIds: string[]): Promise<{ slaves: SlaveRow[]; material: Map<string, KeyMaterial> }> {
  const { rows } = await c.query(
    named(
      'lock-slave-rows',
      `SELECT k.key_id::text AS "keyId", s.sae AS "saeId", s.sae = ANY(k.fetched_by) AS delivered,
              k.master_sae_id AS "masterSaeId", k.size_bits AS "sizeBits", k.link_id AS "linkId", k.state AS "keyState",
              k.origin_kme_id AS "originKmeId", k.expires_at <= now() AS expired,
              k.held_at IS NOT NULL AS held, k.origin, k.seqs::text AS seqs, k.wrapped
         FROM qkd_key k CROSS JOIN LATERAL unnest(k.slaves) AS s(sae)
        WHERE k.key_id = ANY($1::uuid[])
        ORDER BY k.key_id, s.sae
          FOR UPDATE OF k`,
      [keyIds],
    ),
  );
  const material = new Map<string, KeyMaterial>();
  const slaves = (rows as Array<SlaveRow & { seqs: string | null; wrapped: Buffer | null }>).map(({ seqs, wrapped, ...slave }) => {
    if ((seqs !== null || wrapped !== null) && !material.has(slave.keyId)) {
      material.set(slave.keyId, {
        keyId: slave.keyId,
        linkId: slave.linkId,
        seqs: seqs === null ? [] : fromMultirange(seqs),
        ...(wrapped ? { wrapped } : {}),
      });
    }
    return slave;
  });
  return { slaves, material };
}

/**
 * Marks keys delivered to slaves (any number of slaves, each with its keys; the caller decided on the locked rows that
 * each may fetch them); for the keys no slave still waits for, destroys the material (a relayed key's envelope set to
 * NULL, positions queued for erasure from their chunks) in the same statement. Audits all of it. Throws when a key is
 * not waiting for one of the slaves named (nothing is recorded then: the caller's transaction rolls back).
 */
export async function recordSlaveDeliveries(
  c: DbClient,
  d: { deliveries: Array<{ slaveSaeId: string; keyIds: string[] }>; destroyKeyIds: string[]; auditBodies: string[] },
): Promise<void> {
  const pairs = d.deliveries.flatMap((x) => x.keyIds.map((keyId) => [keyId, x.slaveSaeId] as const));
  const { rows } = await c.query(
    named(
      'record-slave-deliveries',
      `WITH t AS (
         SELECT key_id, array_agg(sae_id) AS saes FROM unnest($1::uuid[], $2::text[]) AS t(key_id, sae_id) GROUP BY key_id),
       got AS (
         UPDATE qkd_key q SET fetched_by = q.fetched_by || t.saes,
                slaves_pending = q.slaves_pending - cardinality(t.saes),
                state = CASE WHEN q.key_id = ANY($3::uuid[]) THEN 'DESTROYED' ELSE q.state END,
                destroyed_at = CASE WHEN q.key_id = ANY($3::uuid[]) THEN now() ELSE q.destroyed_at END,
                wrapped = CASE WHEN q.key_id = ANY($3::uuid[]) THEN NULL ELSE q.wrapped END,
                kek_version = CASE WHEN q.key_id = ANY($3::uuid[]) THEN NULL ELSE q.kek_version END
           FROM t WHERE q.key_id = t.key_id AND t.saes <@ q.slaves AND NOT (t.saes && q.fetched_by)
         RETURNING q.key_id, q.link_id, q.seqs, cardinality(t.saes) AS n),
       erased AS (${queueErasureSql('(SELECT * FROM got WHERE key_id = ANY($3::uuid[]))')}),
       audited AS (${insertAuditSql(4)})
       SELECT COALESCE(sum(n), 0)::int AS got FROM got`,
      [pairs.map(([k]) => k), pairs.map(([, s]) => s), d.destroyKeyIds, d.auditBodies],
    ),
  );
  const got = (rows[0] as { got: number }).got;
  if (got !== pairs.length) throw new Error(`expected to deliver ${pairs.length} keys to slaves, got ${got}`);
}
