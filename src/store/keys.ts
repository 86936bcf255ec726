import type { DbClient } from './db.js';
import { insertAuditSql } from '../audit/event.js';
import { randomShard } from './pool.js';

/**
 * Binding material to key_IDs and moving keys through their lifecycle (DESIGN §5): RESERVED (bound, waiting for
 * the KMEs of remote slaves to confirm, or — at a slave's KME — waiting for its slaves), DELIVERED (handed to the
 * master, waiting for local slaves), DESTROYED or EXPIRED (material erased). Every function runs on a client in a
 * transaction the caller owns, writes its audit events in the same statement, and throws when the rows it expects
 * are not there (the caller's transaction then rolls back: no partial change).
 */

export interface KeyRow {
  keyId: string;
  /** The link the key's blocks are on (or, for a relayed key, the link it arrived over). */
  linkId: string;
  masterSaeId: string;
  originKmeId: string;
  sizeBits: number;
  state: 'RESERVED' | 'DELIVERED';
  /** This KME's slaves for the key (each may fetch it once). */
  localSlaves: string[];
  expiresAt: Date;
  /** A relayed key's own material (barrier envelope); undefined when its material is blocks of `linkId`. */
  wrapped?: { wrapped: Buffer; kekVersion: number };
  /** Positions of the key's blocks on `linkId`, in concatenation order (empty for a relayed key). */
  blockSeqs: string[];
}

export interface BindSpec {
  keys: KeyRow[];
  /**
   * Whose material this is: `owned` — this KME's AVAILABLE blocks it claimed (the master's side); `peer` — blocks
   * the peer owns and reserved here (AVAILABLE, or INGESTED when this end is the primary and has not seen the
   * confirmation of its own announcement yet).
   */
  from: 'owned' | 'peer';
  /** One-time pads spent on relays: destroyed at once (they are part of no key). */
  pads: Array<{ linkId: string; seq: string; from: 'owned' | 'peer' }>;
  auditBodies: string[];
}

/**
 * Binds blocks to new key_IDs, records each key with its local slaves, destroys spent pads, adjusts the counts
 * of owned material and writes the audit events: one statement for any number of keys.
 */
export async function bindKeys(c: DbClient, spec: BindSpec): Promise<void> {
  const blocks = spec.keys.flatMap((k) =>
    k.blockSeqs.map((seq, part) => ({ linkId: k.linkId, seq, keyId: k.keyId, part, state: k.state })),
  );
  const slaves = spec.keys.flatMap((k) => k.localSlaves.map((sae) => [k.keyId, sae] as const));
  // Owned AVAILABLE blocks leave the count when taken; the peer's blocks were never counted here.
  const taken = new Map<string, number>();
  const owned = [...(spec.from === 'owned' ? blocks : []), ...spec.pads.filter((p) => p.from === 'owned')];
  for (const b of owned) taken.set(b.linkId, (taken.get(b.linkId) ?? 0) + 1);
  const expected = (from: string) =>
    `CASE WHEN ${from} = 'owned' THEN b.state = 'AVAILABLE' AND b.owned
          ELSE b.state IN ('AVAILABLE', 'INGESTED') AND NOT b.owned END`;
  const { rows } = await c.query(
    `WITH bound AS (
       UPDATE key_block b SET state = t.state, key_id = t.key_id, key_part = t.part
         FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::smallint[], $5::text[]) AS t(link, seq, key_id, part, state)
        WHERE b.link_id = t.link AND b.seq = t.seq AND b.key_id IS NULL AND ${expected('$25::text')}
       RETURNING 1),
     padded AS (
       UPDATE key_block b SET state = 'DESTROYED', wrapped = NULL, kek_version = NULL
         FROM unnest($6::text[], $7::bigint[], $26::text[]) AS t(link, seq, origin)
        WHERE b.link_id = t.link AND b.seq = t.seq AND b.key_id IS NULL AND ${expected('t.origin')}
       RETURNING 1),
     keys AS (
       INSERT INTO qkd_key (key_id, link_id, master_sae_id, origin_kme_id, size_bits, block_count, state,
                            slaves_pending, expires_at, wrapped, kek_version)
       SELECT * FROM unnest($8::uuid[], $9::text[], $10::text[], $11::text[], $12::int[], $13::smallint[], $14::text[],
                            $15::int[], $16::timestamptz[], $17::bytea[], $18::int[])
       RETURNING 1),
     slaves AS (INSERT INTO key_slave (key_id, sae_id) SELECT * FROM unnest($19::uuid[], $20::text[])),
     counted AS (
       UPDATE pool_count p SET available = available - t.n
         FROM unnest($21::text[], $22::bigint[]) AS t(link, n)
        WHERE p.link_id = t.link AND p.shard = $23),
     audited AS (${insertAuditSql(24)})
     SELECT (SELECT count(*) FROM bound)::int AS bound, (SELECT count(*) FROM padded)::int AS padded,
            (SELECT count(*) FROM keys)::int AS keys`,
    [
      blocks.map((b) => b.linkId),
      blocks.map((b) => b.seq),
      blocks.map((b) => b.keyId),
      blocks.map((b) => b.part),
      blocks.map((b) => b.state),
      spec.pads.map((p) => p.linkId),
      spec.pads.map((p) => p.seq),
      spec.keys.map((k) => k.keyId),
      spec.keys.map((k) => k.linkId),
      spec.keys.map((k) => k.masterSaeId),
      spec.keys.map((k) => k.originKmeId),
      spec.keys.map((k) => k.sizeBits),
      spec.keys.map((k) => k.blockSeqs.length),
      spec.keys.map((k) => k.state),
      spec.keys.map((k) => k.localSlaves.length),
      spec.keys.map((k) => k.expiresAt.toISOString()),
      spec.keys.map((k) => k.wrapped?.wrapped ?? null),
      spec.keys.map((k) => k.wrapped?.kekVersion ?? null),
      slaves.map(([keyId]) => keyId),
      slaves.map(([, sae]) => sae),
      [...taken.keys()],
      [...taken.values()],
      randomShard(),
      spec.auditBodies,
      spec.from,
      spec.pads.map((p) => p.from),
    ],
  );
  const r = rows[0] as { bound: number; padded: number; keys: number };
  if (r.bound !== blocks.length || r.padded !== spec.pads.length || r.keys !== spec.keys.length) {
    throw new MaterialGoneError(
      `material not available as expected: bound ${r.bound} of ${blocks.length} blocks, spent ${r.padded} of ${spec.pads.length} pads`,
    );
  }
}

/** Blocks a transaction expected were taken, destroyed or never there: the request fails, nothing changes. */
export class MaterialGoneError extends Error {
  override name = 'MaterialGoneError';
}

/**
 * After every KME beyond this one confirmed: records where each key went (`relayedTo`, for voids later) and
 * settles it. At the origin (`toMaster`) the keys go to the master: DELIVERED when local slaves wait for them,
 * else DESTROYED at once. At a relay node they stay RESERVED for local slaves, or are DESTROYED when none waits
 * here (a trusted node keeps no copy it does not need). Audited by the caller's events.
 */
export async function settleForwarded(
  c: DbClient,
  keys: Array<{ keyId: string; relayedTo: string[] }>,
  toMaster: boolean,
  auditBodies: string[],
): Promise<void> {
  const { rows } = await c.query(
    `WITH t AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS t(key_id, peers)),
     k AS (
       UPDATE qkd_key q SET
              state = CASE WHEN q.slaves_pending = 0 THEN 'DESTROYED' WHEN $3 THEN 'DELIVERED' ELSE q.state END,
              destroyed_at = CASE WHEN q.slaves_pending = 0 THEN now() ELSE NULL END,
              wrapped = CASE WHEN q.slaves_pending = 0 THEN NULL ELSE q.wrapped END,
              kek_version = CASE WHEN q.slaves_pending = 0 THEN NULL ELSE q.kek_version END,
              relayed_to = string_to_array(t.peers, ',')
         FROM t WHERE q.key_id = t.key_id AND q.state = 'RESERVED'
       RETURNING q.key_id, q.state),
     b AS (
       UPDATE key_block SET state = CASE WHEN k.state = 'DESTROYED' THEN 'DESTROYED' ELSE 'DELIVERED' END,
              wrapped = CASE WHEN k.state = 'DESTROYED' THEN NULL ELSE key_block.wrapped END,
              kek_version = CASE WHEN k.state = 'DESTROYED' THEN NULL ELSE key_block.kek_version END
         FROM k WHERE key_block.key_id = k.key_id AND (k.state = 'DESTROYED' OR $3)),
     audited AS (${insertAuditSql(4)})
     SELECT count(*)::int AS n FROM k`,
    [keys.map((k) => k.keyId), keys.map((k) => k.relayedTo.join(',')), toMaster, auditBodies],
  );
  const n = (rows[0] as { n: number }).n;
  if (n !== keys.length) throw new MaterialGoneError(`expected ${keys.length} reserved keys, found ${n}`);
}

/** Where the given keys were relayed to (whatever their state now), for passing a void on. */
export async function relayedTo(c: DbClient | { query: DbClient['query'] }, keyIds: string[]): Promise<Map<string, string[]>> {
  if (keyIds.length === 0) return new Map();
  const { rows } = await c.query(
    `SELECT key_id::text AS id, relayed_to AS peers FROM qkd_key WHERE key_id = ANY($1::uuid[]) AND cardinality(relayed_to) > 0`,
    [keyIds],
  );
  return new Map((rows as Array<{ id: string; peers: string[] }>).map((r) => [r.id, r.peers]));
}

/**
 * Ends keys before their time: voided after a failed relay, or expired. Material is erased (blocks and a relayed
 * key's own envelope); slaves still waiting will get 400 not found. Keys already ended are skipped, so calls are
 * idempotent. Returns the key_IDs this call ended.
 */
export async function endKeys(
  c: DbClient,
  keyIds: string[],
  state: 'DESTROYED' | 'EXPIRED',
  auditBody: (ended: string[]) => string | undefined,
): Promise<string[]> {
  const { rows } = await c.query(
    `WITH k AS (
       UPDATE qkd_key SET state = $2, destroyed_at = now(), wrapped = NULL, kek_version = NULL
        WHERE key_id = ANY($1::uuid[]) AND state IN ('RESERVED', 'DELIVERED')
       RETURNING key_id),
     b AS (
       UPDATE key_block SET state = $2, wrapped = NULL, kek_version = NULL
        WHERE key_id IN (SELECT key_id FROM k))
     SELECT key_id::text AS id FROM k`,
    [keyIds, state],
  );
  const ended = (rows as Array<{ id: string }>).map((r) => r.id);
  const body = ended.length > 0 ? auditBody(ended) : undefined;
  if (body) await c.query(insertAuditSql(1), [[body]]);
  return ended;
}

/** Keys whose time ran out, oldest first (the expiry job ends them in batches). */
export async function expiredKeys(c: DbClient, limit: number): Promise<Array<{ keyId: string; originKmeId: string; linkId: string }>> {
  const { rows } = await c.query(
    `SELECT key_id::text AS "keyId", origin_kme_id AS "originKmeId", link_id AS "linkId" FROM qkd_key
      WHERE state IN ('RESERVED', 'DELIVERED') AND expires_at < now()
      ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return rows as Array<{ keyId: string; originKmeId: string; linkId: string }>;
}

/**
 * Destroys unreserved copies of material the peer owns (it spent them without reserving them here: a failed
 * relay, an expired reservation). Returns how many blocks were destroyed. Audited by the caller's event.
 */
export async function destroyPeerCopies(
  c: DbClient,
  linkId: string,
  where: { seqs?: string[]; below?: string; storedBefore?: Date },
  auditBody: (n: number) => string,
): Promise<number> {
  const { rows } = await c.query(
    `WITH gone AS (
       UPDATE key_block SET state = 'DESTROYED', wrapped = NULL, kek_version = NULL
        WHERE link_id = $1 AND NOT owned AND state IN ('AVAILABLE', 'INGESTED') AND key_id IS NULL
          AND ($2::bigint[] IS NULL OR seq = ANY($2::bigint[]))
          AND ($3::bigint IS NULL OR (seq < $3 AND state = 'AVAILABLE'))
          AND ($4::timestamptz IS NULL OR ingested_at < $4)
       RETURNING 1)
     SELECT count(*)::int AS n FROM gone`,
    [linkId, where.seqs ?? null, where.below ?? null, where.storedBefore?.toISOString() ?? null],
  );
  const n = (rows[0] as { n: number }).n;
  if (n > 0) await c.query(insertAuditSql(1), [[auditBody(n)]]);
  return n;
}
