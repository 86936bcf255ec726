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

/** A key_ID about to be handed to its master: which blocks make it, and who may fetch it later. */
export interface NewKey {
  keyId: string;
  masterSaeId: string;
  sizeBits: number;
  /** The path's slave first, then the additional slaves. */
  slaveSaeIds: string[];
  /** Claimed blocks, in the order their material is concatenated. */
  blockSeqs: string[];
}

/**
 * Binds claimed blocks to new key_IDs, records each key's slaves, adjusts the count and writes the audit events:
 * one statement for any number of keys (of one or many requests sharing a transaction).
 */
export async function recordMasterDeliveries(c: DbClient, linkId: string, keys: NewKey[], auditBodies: string[]): Promise<void> {
  const seqs = keys.flatMap((k) => k.blockSeqs);
  const slavePairs = keys.flatMap((k) => k.slaveSaeIds.map((sae) => [k.keyId, sae] as const));
  const { rows } = await c.query(
    `WITH taken AS (
       UPDATE key_block b SET state = 'DELIVERED', key_id = t.key_id, key_part = t.part
         FROM unnest($2::bigint[], $3::uuid[], $4::smallint[]) AS t(seq, key_id, part)
        WHERE b.link_id = $1 AND b.seq = t.seq AND b.state = 'AVAILABLE'
       RETURNING 1),
     keys AS (
       INSERT INTO qkd_key (key_id, link_id, master_sae_id, size_bits, block_count, state, slaves_pending)
       SELECT t.key_id, $1, t.master, t.size, t.blocks, 'DELIVERED', t.slaves
         FROM unnest($5::uuid[], $6::text[], $7::int[], $8::smallint[], $9::int[]) AS t(key_id, master, size, blocks, slaves)),
     slaves AS (
       INSERT INTO key_slave (key_id, sae_id) SELECT * FROM unnest($10::uuid[], $11::text[])),
     counted AS (
       UPDATE pool_count SET available = available - cardinality($2::bigint[]) WHERE link_id = $1 AND shard = $12),
     audited AS (${insertAuditSql(13)})
     SELECT count(*)::int AS taken FROM taken`,
    [
      linkId,
      seqs,
      keys.flatMap((k) => k.blockSeqs.map(() => k.keyId)),
      keys.flatMap((k) => k.blockSeqs.map((_, part) => part)),
      keys.map((k) => k.keyId),
      keys.map((k) => k.masterSaeId),
      keys.map((k) => k.sizeBits),
      keys.map((k) => k.blockSeqs.length),
      keys.map((k) => k.slaveSaeIds.length),
      slavePairs.map(([keyId]) => keyId),
      slavePairs.map(([, sae]) => sae),
      randomShard(),
      auditBodies,
    ],
  );
  const taken = (rows[0] as { taken: number }).taken;
  // The blocks are locked by this transaction, so this cannot happen unless the locking above is broken.
  if (taken !== seqs.length) throw new Error(`claimed ${seqs.length} blocks but bound ${taken}`);
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
