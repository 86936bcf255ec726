import { named, type DbClient, type Queryable } from './db.js';
import { insertAuditSql } from '../audit/event.js';
import { MaterialGoneError, refusing, REFUSED } from './errors.js';
import { toMultirange } from './positions.js';

/**
 * Moving keys through their lifecycle (DESIGN §5) once bound (bind-keys.ts): RESERVED (waiting for the KMEs of
 * remote slaves to confirm, or — at a slave's KME — waiting for its slaves), DELIVERED (handed to the master,
 * waiting for local slaves), DESTROYED or EXPIRED (material erased). Every function runs on a client in a
 * transaction the caller owns (settleForwarded may also run on its own: it checks itself), writes its audit events
 * in the same statement, and throws when the rows it expects are not there (the caller's transaction then rolls
 * back: no partial change).
 */

export { MaterialGoneError };

/**
 * After every KME beyond this one confirmed: records where each key went (`relayedTo`, for voids later) and
 * settles it. At the origin (`toMaster`) the keys go to the master: DELIVERED when local slaves wait for them,
 * else DESTROYED at once. At a relay node they stay RESERVED for local slaves, or are DESTROYED when none waits
 * here (a trusted node keeps no copy it does not need). Audited by the caller's events.
 *
 * One statement that checks itself (src/store/errors.ts `refusing`), so it needs no transaction around it: it
 * changes nothing (MaterialGoneError) when a key is no longer reserved, or (DeadlinePassedError) when `withinMs`
 * passed from its arrival at the server before it ended — the deadline the caller's client is answered at, measured
 * on the server's clock from the statement's start, so that clocks apart cannot move it.
 */
export async function settleForwarded(
  c: Queryable,
  keys: Array<{ keyId: string; relayedTo: string[] }>,
  toMaster: boolean,
  auditBodies: string[],
  withinMs?: number,
): Promise<void> {
  await refusing(c.query(
    named(
      'settle-forwarded',
      `WITH t AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS t(key_id, peers)),
       k AS (
         UPDATE qkd_key q SET
                state = CASE WHEN q.slaves_pending = 0 THEN 'DESTROYED' WHEN $3 THEN 'DELIVERED' ELSE q.state END,
                destroyed_at = CASE WHEN q.slaves_pending = 0 THEN now() ELSE NULL END,
                wrapped = CASE WHEN q.slaves_pending = 0 THEN NULL ELSE q.wrapped END,
                kek_version = CASE WHEN q.slaves_pending = 0 THEN NULL ELSE q.kek_version END,
                relayed_to = string_to_array(t.peers, ',')
           FROM t WHERE q.key_id = t.key_id AND q.state = 'RESERVED'
         RETURNING q.key_id, q.state, q.link_id, q.seqs),
       erase AS (${queueErasureSql("(SELECT * FROM k WHERE state = 'DESTROYED')")}),
       audited AS (${insertAuditSql(4)}),
       found AS (SELECT count(*)::int AS n FROM k)
       SELECT CASE
                WHEN n <> cardinality($1::uuid[])
                  THEN qkms_refuse('${REFUSED.materialGone}', format('expected %s reserved keys, found %s', cardinality($1::uuid[]), n))
                WHEN clock_timestamp() >= statement_timestamp() + make_interval(secs => $5::float8 / 1000)
                  THEN qkms_refuse('${REFUSED.pastDeadline}', 'the deadline passed before the keys were settled; nothing was settled')
              END AS refused
         FROM found`,
      [keys.map((k) => k.keyId), keys.map((k) => k.relayedTo.join(',')), toMaster, auditBodies, withinMs ?? null],
    ),
  ));
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
       RETURNING key_id, link_id, seqs),
     erase AS (${queueErasureSql('k')})
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
 * SQL that queues the positions of the keys in `rows` (a CTE or subquery with link_id and seqs) for erasure from
 * their chunks: used in the same statement that ends the keys.
 */
export function queueErasureSql(rows: string): string {
  return `INSERT INTO erase_queue (link_id, seqs)
    SELECT link_id, range_agg(seqs) FROM ${rows} AS ended WHERE seqs IS NOT NULL GROUP BY link_id`;
}

/**
 * Destroys unreserved copies of material the peer owns (it spent them without reserving them here: a failed
 * relay, an expired reservation): `seqs` names them, or `below` the owner's watermark (then only confirmed copies
 * stored before `storedBefore`). Positions bound to keys here are kept. The destroyed positions are marked gone in
 * their chunks (no reservation can take them any more) and queued for erasure. Returns how many blocks were
 * destroyed. Audited by the caller's event.
 */
export async function destroyPeerCopies(
  c: DbClient,
  linkId: string,
  where: { seqs?: string[]; below?: string; storedBefore?: Date },
  auditBody: (n: number) => string,
): Promise<number> {
  const target = where.seqs ? toMultirange(where.seqs) : where.below !== undefined ? `{[0,${where.below})}` : '{}';
  if (target === '{}') return 0;
  const { rows } = await c.query(
    `WITH cand AS (
       SELECT k.first_seq,
              ($2::int8multirange * int8multirange(int8range(k.first_seq, k.first_seq + k.blocks))) - k.gone - k.bound AS newly
         FROM key_chunk k
        WHERE k.link_id = $1 AND NOT k.owned AND k.first_seq < upper($2::int8multirange)
          AND k.first_seq + k.blocks > lower($2::int8multirange)
          AND ($3::boolean OR k.confirmed) AND ($4::timestamptz IS NULL OR k.ingested_at < $4)
          -- Only chunks with something to destroy are locked. Below the owner's watermark nearly every chunk is spent
          -- (bound here, or gone): locking them all wrote a lock into each of them every second (12.5 ms a statement
          -- on the bench's network, growing with the link) and held the chunk the bindings were using.
          AND NOT isempty(($2::int8multirange * int8multirange(int8range(k.first_seq, k.first_seq + k.blocks))) - k.gone - k.bound)
        ORDER BY k.first_seq FOR UPDATE),
     gone AS (
       UPDATE key_chunk k SET gone = k.gone + cand.newly FROM cand
        WHERE k.link_id = $1 AND k.first_seq = cand.first_seq AND NOT isempty(cand.newly)
       RETURNING cand.newly),
     erase AS (INSERT INTO erase_queue (link_id, seqs) SELECT $1, range_agg(newly) FROM gone HAVING count(*) > 0)
     SELECT COALESCE(sum(upper(r) - lower(r)), 0)::int AS n FROM gone, unnest(gone.newly) AS r`,
    [linkId, target, where.seqs !== undefined, where.storedBefore?.toISOString() ?? null],
  );
  const n = (rows[0] as { n: number }).n;
  if (n > 0) await c.query(insertAuditSql(1), [[auditBody(n)]]);
  return n;
}
