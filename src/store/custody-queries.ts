import type { Db, DbClient } from './db.js';

/**
 * Operators' questions about custody, answered from this KME's custody log (audit_event), which outlives the keys'
 * rows (compacted once ended) until it is pruned: who holds a key, which keys an SAE received, which SAEs hold keys
 * of a link. Each KME answers for what it did itself: a slave at a peer KME is in that KME's log.
 *
 * Time bounds use the events' `at` through a BRIN index (migration 0008): a query since T reads the log since T.
 */

/** One event of a key's custody, as an operator reads it. */
export interface CustodyStep {
  seq: number;
  at: Date;
  actor: string;
  operation: string;
  outcome: string;
  detail: Record<string, unknown>;
}

const KEY_OPERATIONS = `('reserve', 'deliver_master', 'deliver_slave', 'relay', 'destroy', 'void', 'expire', 'suspend', 'resume', 'revoke')`;

/** The custody events of the given keys (at most a few per key), in log order, per key_ID. */
export async function custodyOf(db: Pick<DbClient, 'query'>, keyIds: string[]): Promise<Map<string, CustodyStep[]>> {
  const { rows } = await db.query<{ seq: string; at: Date; actor: string; operation: string; outcome: string; key_ids: string[]; detail: Record<string, unknown> | null }>(
    `SELECT seq, at, actor, operation, outcome, key_ids::text[] AS key_ids, body::jsonb -> 'detail' AS detail
       FROM audit_event WHERE key_ids && $1::uuid[] AND operation IN ${KEY_OPERATIONS} ORDER BY seq`,
    [keyIds],
  );
  const wanted = new Set(keyIds);
  const steps = new Map<string, CustodyStep[]>(keyIds.map((id) => [id, []]));
  for (const r of rows) {
    const step = { seq: Number(r.seq), at: r.at, actor: r.actor, operation: r.operation, outcome: r.outcome, detail: r.detail ?? {} };
    for (const id of r.key_ids) if (wanted.has(id)) steps.get(id)!.push(step);
  }
  return steps;
}

/** The SAEs a key went to, from its custody steps: its master and each slave that fetched it here. */
export function holdersIn(steps: CustodyStep[]): Array<{ saeId: string; as: 'master' | 'slave'; at: Date }> {
  return steps
    .filter((s) => s.outcome === 'ok' && (s.operation === 'deliver_master' || s.operation === 'deliver_slave') && s.actor.startsWith('sae:'))
    .map((s) => ({ saeId: s.actor.slice(4), as: s.operation === 'deliver_master' ? ('master' as const) : ('slave' as const), at: s.at }));
}

/** One key handed to an SAE. `linkId` is the link whose material made the key, when this KME's log says. */
export interface Receipt {
  seq: number;
  keyId: string;
  as: 'master' | 'slave';
  at: Date;
  linkId?: string;
}

/**
 * The keys an SAE received here at or after `since` (and before `until`), oldest first, `limit` at most, after
 * sequence number `afterSeq` (the previous page's last).
 */
export async function receivedBy(
  db: Db,
  q: { saeId: string; since: Date; until?: Date; limit: number; afterSeq?: number },
): Promise<Receipt[]> {
  const { rows } = await db.query<{ seq: string; at: Date; operation: string; key_id: string; link_id: string | null }>(
    `SELECT e.seq, e.at, e.operation, k.key_id, e.body::jsonb #>> '{detail,link_id}' AS link_id
       FROM audit_event e CROSS JOIN LATERAL unnest(e.key_ids::text[]) AS k(key_id)
      WHERE e.at >= $2 AND ($3::timestamptz IS NULL OR e.at < $3) AND e.seq > $5
        AND e.actor = $1 AND e.outcome = 'ok' AND e.operation IN ('deliver_master', 'deliver_slave')
      ORDER BY e.seq, k.key_id LIMIT $4`,
    [`sae:${q.saeId}`, q.since, q.until ?? null, q.limit, q.afterSeq ?? 0],
  );
  const receipts: Receipt[] = rows.map((r) => ({
    seq: Number(r.seq),
    keyId: r.key_id,
    as: r.operation === 'deliver_master' ? 'master' : 'slave',
    at: r.at,
    ...(r.link_id ? { linkId: r.link_id } : {}),
  }));
  // A slave's delivery does not name the link: the event that bound the key here does.
  const unknown = receipts.filter((r) => !r.linkId).map((r) => r.keyId);
  if (unknown.length > 0) {
    const links = await linksOf(db, unknown);
    for (const r of receipts) if (!r.linkId && links.has(r.keyId)) r.linkId = links.get(r.keyId)!;
  }
  return receipts;
}

async function linksOf(db: Db, keyIds: string[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ key_id: string; link_id: string }>(
    `SELECT k.key_id, e.body::jsonb #>> '{detail,link_id}' AS link_id
       FROM audit_event e CROSS JOIN LATERAL unnest(e.key_ids::text[]) AS k(key_id)
      WHERE e.key_ids && $1::uuid[] AND e.operation IN ('reserve', 'deliver_master') AND e.outcome = 'ok'
        AND k.key_id = ANY($1::text[])`,
    [keyIds],
  );
  return new Map(rows.filter((r) => r.link_id).map((r) => [r.key_id, r.link_id]));
}

/** The SAEs that received keys made from a link's material since a time, with how many and when. */
export interface LinkHolder {
  saeId: string;
  as: 'master' | 'slave';
  keys: number;
  first: Date;
  last: Date;
}

/**
 * The SAEs that received, here, keys bound here from `linkId`'s material at or after `since`: masters that got them
 * (enc_keys) and slaves that fetched them (dec_keys), whenever that was.
 */
export async function holdersOfLink(db: Db, linkId: string, since: Date): Promise<LinkHolder[]> {
  const { rows } = await db.query<{ sae: string; operation: string; keys: number; first: Date; last: Date }>(
    `WITH bound AS (
       SELECT DISTINCT k.key_id
         FROM audit_event e CROSS JOIN LATERAL unnest(e.key_ids) AS k(key_id)
        WHERE e.at >= $2 AND e.outcome = 'ok' AND e.operation IN ('reserve', 'deliver_master')
          AND e.body::jsonb #>> '{detail,link_id}' = $1),
     got AS (
       SELECT e.actor, e.operation, e.at, k.key_id
         FROM audit_event e CROSS JOIN LATERAL unnest(e.key_ids) AS k(key_id)
        WHERE e.at >= $2 AND e.outcome = 'ok' AND e.operation IN ('deliver_master', 'deliver_slave') AND e.actor LIKE 'sae:%')
     SELECT substr(got.actor, 5) AS sae, got.operation, count(DISTINCT got.key_id)::int AS keys, min(got.at) AS first, max(got.at) AS last
       FROM got JOIN bound USING (key_id)
      GROUP BY got.actor, got.operation ORDER BY sae, got.operation`,
    [linkId, since],
  );
  return rows.map((r) => ({ saeId: r.sae, as: r.operation === 'deliver_master' ? 'master' : 'slave', keys: r.keys, first: r.first, last: r.last }));
}
