import type { DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';
import { randomShard } from './pool.js';

/**
 * The queries of key delivery. Each function runs on a client inside a transaction the caller owns
 * (`withTransaction`), so claiming material, changing its state and writing the audit event commit together.
 */

export interface StoredBlock {
  seq: string;
  wrapped: Buffer;
}

/**
 * Locks up to `count` AVAILABLE blocks of the link, oldest first. Rows another transaction holds are skipped, not
 * waited for: concurrent requests never block each other and never see the same block. Returns fewer rows when
 * the pool has fewer; the caller then rolls back.
 */
export async function claimAvailableBlocks(c: DbClient, linkId: string, count: number): Promise<StoredBlock[]> {
  // ORDER BY names the column, not the text alias of the same name: ordering by the alias would sort every
  // available row as text instead of walking the partial index.
  const { rows } = await c.query(
    `SELECT seq::text AS seq, wrapped FROM key_block
      WHERE link_id = $1 AND state = 'AVAILABLE'
      ORDER BY key_block.seq LIMIT $2 FOR UPDATE SKIP LOCKED`,
    [linkId, count],
  );
  return rows as StoredBlock[];
}

export interface MasterDelivery {
  linkId: string;
  masterSaeId: string;
  slaveSaeIds: string[]; // the path's slave first, then the additional slaves
  sizeBits: number;
  blocksPerKey: number;
  keyIds: string[];
  /** blocks[i] goes to keyIds[floor(i / blocksPerKey)] as part i % blocksPerKey */
  blockSeqs: string[];
  auditBodies: string[];
}

/** Binds claimed blocks to new key_IDs, records the slaves, adjusts the count and audits: one statement. */
export async function recordMasterDelivery(c: DbClient, d: MasterDelivery): Promise<void> {
  const keyIdPerBlock = d.blockSeqs.map((_, i) => d.keyIds[Math.floor(i / d.blocksPerKey)]);
  const partPerBlock = d.blockSeqs.map((_, i) => i % d.blocksPerKey);
  const { rows } = await c.query(
    `WITH taken AS (
       UPDATE key_block b SET state = 'DELIVERED', key_id = t.key_id, key_part = t.part
         FROM unnest($2::bigint[], $3::uuid[], $4::smallint[]) AS t(seq, key_id, part)
        WHERE b.link_id = $1 AND b.seq = t.seq AND b.state = 'AVAILABLE'
       RETURNING 1),
     keys AS (
       INSERT INTO qkd_key (key_id, link_id, master_sae_id, size_bits, block_count, state, slaves_pending)
       SELECT k, $1, $5, $6, $7, 'DELIVERED', cardinality($8::text[]) FROM unnest($9::uuid[]) AS k),
     slaves AS (
       INSERT INTO key_slave (key_id, sae_id) SELECT k, s FROM unnest($9::uuid[]) AS k, unnest($8::text[]) AS s),
     counted AS (
       UPDATE pool_count SET available = available - cardinality($2::bigint[]) WHERE link_id = $1 AND shard = $10),
     audited AS (${insertAuditSql(11)})
     SELECT count(*)::int AS taken FROM taken`,
    [
      d.linkId,
      d.blockSeqs,
      keyIdPerBlock,
      partPerBlock,
      d.masterSaeId,
      d.sizeBits,
      d.blocksPerKey,
      d.slaveSaeIds,
      d.keyIds,
      randomShard(),
      d.auditBodies,
    ],
  );
  const taken = (rows[0] as { taken: number }).taken;
  // The blocks are locked by this transaction, so this cannot happen unless the locking above is broken.
  if (taken !== d.blockSeqs.length) throw new Error(`claimed ${d.blockSeqs.length} blocks but bound ${taken}`);
}

export interface SlaveRow {
  keyId: string;
  saeId: string;
  delivered: boolean;
  masterSaeId: string;
  sizeBits: number;
  linkId: string;
  keyState: string;
}

/**
 * Locks every slave row of the given keys (in key_ID, SAE order, so concurrent requests for overlapping keys
 * cannot deadlock). Holding them, the caller sees the final word on who still waits for each key, which is
 * what decides when the material can be erased.
 */
export async function lockSlaveRows(c: DbClient, keyIds: string[]): Promise<SlaveRow[]> {
  const { rows } = await c.query(
    `SELECT s.key_id::text AS "keyId", s.sae_id AS "saeId", s.delivered_at IS NOT NULL AS delivered,
            k.master_sae_id AS "masterSaeId", k.size_bits AS "sizeBits", k.link_id AS "linkId", k.state AS "keyState"
       FROM key_slave s JOIN qkd_key k USING (key_id)
      WHERE s.key_id = ANY($1::uuid[])
      ORDER BY s.key_id, s.sae_id
        FOR UPDATE OF s`,
    [keyIds],
  );
  return rows as SlaveRow[];
}

export interface KeyBlock extends StoredBlock {
  keyId: string;
  linkId: string;
}

/** The blocks of the given keys, in key_ID then part order. */
export async function blocksOfKeys(c: DbClient, keyIds: string[]): Promise<KeyBlock[]> {
  const { rows } = await c.query(
    `SELECT key_id::text AS "keyId", link_id AS "linkId", seq::text AS seq, wrapped FROM key_block
      WHERE key_id = ANY($1::uuid[]) AND wrapped IS NOT NULL
      ORDER BY key_id, key_part`,
    [keyIds],
  );
  return rows as KeyBlock[];
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
              destroyed_at = CASE WHEN key_id = ANY($3::uuid[]) THEN now() ELSE destroyed_at END
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
