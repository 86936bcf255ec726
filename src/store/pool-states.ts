import { auditBody, insertAuditSql } from '../audit/event.js';
import { withTransaction, type Db, type DbClient } from './db.js';
import { nextShard } from './pool.js';
import type { ChangeActor } from './principals.js';

/**
 * What operators do to pools (migration 0009): a pool is one link's material at this KME. Every change is one
 * transaction with its custody event (`pool`); the KME processes learn it from their next poll (src/pool/pool-gate.ts).
 */

export const POOL_STATES = ['active', 'suspended', 'draining', 'pending_deletion', 'deleted'] as const;
export type PoolState = (typeof POOL_STATES)[number];

export interface PoolStateRow {
  linkId: string;
  state: PoolState;
  deleteAt: Date | null;
  changedAt: Date;
}

export const POOL_CHANGES = ['suspend', 'resume', 'drain', 'schedule_deletion', 'cancel_deletion'] as const;
export type PoolChange = (typeof POOL_CHANGES)[number];

/** Which states each change leaves from, and where it goes. Deleted is final; a cancelled deletion is suspended. */
const MOVES: Record<PoolChange, { from: readonly PoolState[]; to: PoolState }> = {
  suspend: { from: ['active', 'draining'], to: 'suspended' },
  resume: { from: ['suspended', 'draining'], to: 'active' },
  drain: { from: ['active', 'suspended'], to: 'draining' },
  schedule_deletion: { from: ['active', 'suspended', 'draining'], to: 'pending_deletion' },
  cancel_deletion: { from: ['pending_deletion'], to: 'suspended' },
};

/** A change refused: no such pool here, or its state does not allow it. */
export class PoolChangeError extends Error {
  override name = 'PoolChangeError';
  constructor(
    message: string,
    readonly kind: 'not_found' | 'conflict',
  ) {
    super(message);
  }
}

const COLUMNS = `link_id AS "linkId", pool_state AS state, pool_delete_at AS "deleteAt", pool_changed_at AS "changedAt"`;

export async function loadPoolStates(db: Pick<Db, 'query'>): Promise<PoolStateRow[]> {
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM link ORDER BY link_id`);
  return rows as PoolStateRow[];
}

/**
 * Moves a pool from its state to the one `change` leads to, audited. `deleteAt` (schedule_deletion only) is when
 * its material will be destroyed. Throws PoolChangeError when the link is not here or the move is not allowed.
 */
export async function changePoolState(
  db: Db,
  linkId: string,
  change: PoolChange,
  by: ChangeActor,
  opts: { reason?: string; deleteAt?: Date } = {},
): Promise<PoolStateRow> {
  const move = MOVES[change];
  return withTransaction(db, async (c) => {
    // NO KEY UPDATE: ingest's inserts into key_chunk hold KEY SHARE locks on the link's row (their foreign key).
    const { rows } = await c.query(`SELECT pool_state AS state FROM link WHERE link_id = $1 FOR NO KEY UPDATE`, [linkId]);
    const from = (rows[0] as { state: PoolState } | undefined)?.state;
    if (!from) throw new PoolChangeError(`link ${linkId} has no pool at this KME`, 'not_found');
    if (!move.from.includes(from)) {
      throw new PoolChangeError(`the pool of link ${linkId} is ${from.replace('_', ' ')}: ${change.replace('_', ' ')} is allowed from ${move.from.join(', ').replace(/_/g, ' ')} only`, 'conflict');
    }
    const deleteAt = move.to === 'pending_deletion' ? opts.deleteAt! : null;
    const { rows: changed } = await c.query(
      `UPDATE link SET pool_state = $2, pool_delete_at = $3, pool_changed_at = now() WHERE link_id = $1 RETURNING ${COLUMNS}`,
      [linkId, move.to, deleteAt],
    );
    const detail = { link_id: linkId, change, from, to: move.to, ...(deleteAt ? { delete_at: deleteAt.toISOString() } : {}), ...(opts.reason ? { reason: opts.reason } : {}) };
    await c.query(insertAuditSql(1), [[auditBody({ operation: 'pool', outcome: 'ok', ...by, detail })]]);
    return changed[0] as PoolStateRow;
  });
}

/** Records an outage drill (`kms pool outage`): the pool's state does not change, but who cut the link is custody. */
export async function recordOutageDrill(db: Db, linkId: string, seconds: number, downUntil: Date, by: ChangeActor): Promise<void> {
  const detail = { link_id: linkId, change: 'outage_drill', seconds, down_until: downUntil.toISOString() };
  await db.query(insertAuditSql(1), [[auditBody({ operation: 'pool', outcome: 'ok', ...by, detail })]]);
}

/**
 * Deletes the material of one pool whose deletion is due, in one transaction: every position of the link held here
 * and bound to no key (free positions of this end's chunks, unbound copies of the peer's) is destroyed — marked gone,
 * out of the counts, queued for erasure from its chunk's envelope — and the pool becomes `deleted`, audited. Keys
 * already bound keep their material until their own end (delivery, expiry). Returns the blocks destroyed, or
 * undefined when nothing was due (or this end still waits for its peer to confirm material, which would otherwise
 * become available after the deletion: the next pass tries again).
 */
export async function deletePoolIfDue(db: Db, linkId: string, kmeId: string): Promise<number | undefined> {
  return withTransaction(db, async (c) => {
    const { rows } = await c.query(
      `SELECT pool_delete_at AS at FROM link WHERE link_id = $1 AND pool_state = 'pending_deletion' AND pool_delete_at <= now() FOR NO KEY UPDATE SKIP LOCKED`,
      [linkId],
    );
    if (rows.length === 0) return undefined;
    if (await awaitingConfirmation(c, linkId)) return undefined;
    const { rows: gone } = await c.query(
      `WITH c AS (
         SELECT first_seq, owned, confirmed, set_aside,
                (CASE WHEN owned THEN int8multirange(int8range(first_seq + next_free, first_seq + blocks))
                      ELSE int8multirange(int8range(first_seq, first_seq + blocks)) - bound END) - gone AS free
           FROM key_chunk WHERE link_id = $1 FOR UPDATE),
       up AS (
         UPDATE key_chunk k SET gone = k.gone + c.free, next_free = CASE WHEN k.owned THEN k.blocks ELSE 0 END
           FROM c WHERE k.link_id = $1 AND k.first_seq = c.first_seq AND NOT isempty(c.free)
         RETURNING c.owned, c.confirmed, c.set_aside, c.free),
       n AS (
         SELECT COALESCE(sum(upper(r) - lower(r)), 0)::bigint AS blocks,
                COALESCE(sum(upper(r) - lower(r)) FILTER (WHERE owned AND NOT set_aside), 0)::bigint AS counted
           FROM up, unnest(up.free) AS r),
       counted AS (UPDATE pool_count SET available = available - (SELECT counted FROM n) WHERE link_id = $1 AND shard = $2),
       erase AS (INSERT INTO erase_queue (link_id, seqs) SELECT $1, range_agg(free) FROM up HAVING count(*) > 0)
       SELECT blocks::text FROM n`,
      [linkId, nextShard()],
    );
    const blocks = Number((gone[0] as { blocks: string }).blocks);
    await c.query(`UPDATE link SET pool_state = 'deleted', pool_delete_at = NULL, pool_changed_at = now() WHERE link_id = $1`, [linkId]);
    await c.query(insertAuditSql(1), [
      [auditBody({ operation: 'pool', outcome: 'ok', actor: `kme:${kmeId}`, detail: { link_id: linkId, change: 'delete', from: 'pending_deletion', to: 'deleted', blocks_destroyed: blocks } })],
    ]);
    return blocks;
  });
}

/** Whether this end holds material of its own the peer has not confirmed yet (never handed out; it may still be). */
async function awaitingConfirmation(c: DbClient, linkId: string): Promise<boolean> {
  const { rows } = await c.query(`SELECT 1 FROM key_chunk WHERE link_id = $1 AND owned AND NOT confirmed LIMIT 1`, [linkId]);
  return rows.length > 0;
}

/** Links whose pool deletion is due now. */
export async function duePoolDeletions(db: Db): Promise<string[]> {
  const { rows } = await db.query(`SELECT link_id FROM link WHERE pool_state = 'pending_deletion' AND pool_delete_at <= now()`);
  return (rows as Array<{ link_id: string }>).map((r) => r.link_id);
}
