import type { Barrier } from '../barrier/barrier.js';
import type { Logger } from '../log.js';
import { byteaArray, withTransaction, type Db } from '../store/db.js';
import { MAX_CHUNK_BLOCKS } from '../store/chunks.js';
import { intervalsOf } from '../store/positions.js';
import { startBackgroundJob } from './background-job.js';

/**
 * "Erased once delivered" for material stored in chunks. Destroying a key (or a pad, or a peer's copy) queues its
 * positions (`erase_queue`, in the same transaction as the destruction); this job then re-seals each chunk that holds
 * queued positions with those positions zeroed, under a fresh data key, and deletes a chunk once all its positions
 * are gone. After that the stored row no longer contains the destroyed material under any key the HSM can unwrap
 * (PostgreSQL reclaims the old row versions at its next vacuum, as it did for the per-block rows before).
 *
 * Bound: every pass empties the queue (in transactions of up to `batch` queued entries) and passes run every
 * `everyMs` (1 s), so destroyed material leaves the stored envelopes within about a second under load; while the HSM
 * or the database is away the queue waits and the job retries. The README states the bound.
 *
 * It also compacts: keys ended more than `endedRetentionMs` ago (10 minutes: voids that pass them on arrive within
 * seconds) are deleted — their custody lives on in `audit_event` — so the pool's tables stay bounded instead of
 * growing by a row per key forever. Only once their positions are erased, so that a chunk never holds material of a
 * key whose row is gone. (The "never bound twice" guard is the chunk's own record, its cursor and `bound`, which
 * outlives the keys.)
 *
 * With replicas it runs where `leads` says (the housekeeping leader); running it twice would be harmless anyway:
 * queue entries are taken with SKIP LOCKED and chunks are locked while re-sealed.
 */
export function startEraserJob(
  deps: { db: Db; barrier: Barrier; log: Logger; everyMs?: number; batch?: number; endedRetentionMs?: number; leads?: () => Promise<boolean> },
): () => Promise<void> {
  return startBackgroundJob({
    leads: deps.leads,
    what: 'material erasure',
    log: deps.log,
    everyMs: deps.everyMs ?? 1_000,
    step: async () => {
      await eraseQueued(deps);
      await compactEnded(deps.db, deps.endedRetentionMs ?? 600_000);
    },
  });
}

export interface ErasureFigures {
  /** Queue entries taken. */
  queued: number;
  resealed: number;
  deleted: number;
}

/** Erases everything queued now; returns what it did. */
export async function eraseQueued(deps: { db: Db; barrier: Barrier; batch?: number }): Promise<ErasureFigures> {
  const total: ErasureFigures = { queued: 0, resealed: 0, deleted: 0 };
  const batch = deps.batch ?? 2_000;
  const { rows } = await deps.db.query('SELECT DISTINCT link_id AS "linkId" FROM erase_queue ORDER BY 1');
  for (const { linkId } of rows as Array<{ linkId: string }>) {
    for (;;) {
      const f = await eraseBatch(deps.db, deps.barrier, linkId, batch);
      total.queued += f.queued;
      total.resealed += f.resealed;
      total.deleted += f.deleted;
      if (f.queued < batch) break;
    }
  }
  return total;
}

/**
 * One transaction per link: takes up to `batch` of its queue entries and erases their positions from every chunk of
 * the link that holds them. Never more than one link's chunks locked at once: it waits for chunks only in ascending
 * order within that link, as every other transaction does, so it cannot close a cycle with a transaction that holds
 * chunks of two links (a relay node's binding of the incoming link with the pads it claimed on the next: a deadlock
 * the bench's relayed phase met while the eraser still took several links in one transaction).
 */
async function eraseBatch(db: Db, barrier: Barrier, linkId: string, batch: number): Promise<ErasureFigures> {
  return withTransaction(db, async (c) => {
    const { rows: links } = await c.query(
      `WITH q AS (
         DELETE FROM erase_queue WHERE id IN (SELECT id FROM erase_queue WHERE link_id = $2 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING link_id, seqs)
       SELECT link_id AS "linkId", range_agg(seqs)::text AS seqs, count(*)::int AS n FROM q GROUP BY link_id`,
      [batch, linkId],
    );
    const figures: ErasureFigures = { queued: 0, resealed: 0, deleted: 0 };
    const link = (links as Array<{ linkId: string; seqs: string; n: number }>)[0];
    if (link) {
      figures.queued += link.n;
      const { rows: chunks } = await c.query(
        `SELECT first_seq::text AS first, blocks, sealed,
                (gone + ($2::int8multirange * int8multirange(int8range(first_seq, first_seq + blocks))))::text AS gone,
                (gone + $2::int8multirange) @> int8range(first_seq, first_seq + blocks) AS "allGone"
           FROM key_chunk
          WHERE link_id = $1 AND NOT set_aside
            AND first_seq < upper($2::int8multirange) AND first_seq > lower($2::int8multirange) - ${MAX_CHUNK_BLOCKS}
            AND int8range(first_seq, first_seq + blocks) && $2::int8multirange
          ORDER BY first_seq FOR UPDATE`,
        [link.linkId, link.seqs],
      );
      const found = chunks as Array<{ first: string; blocks: number; sealed: Buffer; gone: string; allGone: boolean }>;
      const dead = found.filter((x) => x.allGone).map((x) => x.first);
      if (dead.length > 0) {
        await c.query('DELETE FROM key_chunk WHERE link_id = $1 AND first_seq = ANY($2::bigint[])', [link.linkId, dead]);
        figures.deleted += dead.length;
      }
      const live = found.filter((x) => !x.allGone);
      const resealed = await Promise.all(live.map((x) => reseal(barrier, link.linkId, x)));
      if (live.length > 0) {
        const sealed = byteaArray(resealed.map((r) => r.wrapped), 5);
        await c.query(
          `UPDATE key_chunk k SET sealed = t.sealed, kek_version = t.kek, gone = t.gone
             FROM unnest($2::bigint[], ${sealed.sql}, $3::int[], $4::int8multirange[]) AS t(first, sealed, kek, gone)
            WHERE k.link_id = $1 AND k.first_seq = t.first`,
          [link.linkId, live.map((x) => x.first), resealed.map((r) => r.kekVersion), live.map((x) => x.gone), ...sealed.params],
        );
        figures.resealed += live.length;
      }
    }
    return figures;
  });
}

/** The chunk's envelope again, with every gone position zeroed, under a fresh data key and the current KEK version. */
export async function reseal(barrier: Barrier, linkId: string, chunk: { first: string; blocks: number; sealed: Buffer; gone: string }) {
  const id = { linkId, firstSeq: chunk.first, blocks: chunk.blocks };
  const plain = await barrier.open(chunk.sealed, id);
  try {
    const size = plain.length / chunk.blocks;
    const first = BigInt(chunk.first);
    for (const r of intervalsOf(chunk.gone)) plain.fill(0, Number(r.lo - first) * size, Number(r.hi - first) * size);
    return await barrier.sealChunk(plain, id);
  } finally {
    plain.fill(0);
  }
}

/**
 * Deletes keys ended more than `retentionMs` ago, in batches, provided the erasure queue holds nothing that old
 * (their positions are marked gone in their chunks by then). Returns how many.
 */
export async function compactEnded(db: Db, retentionMs: number, batch = 5_000): Promise<number> {
  let total = 0;
  for (;;) {
    const { rowCount } = await db.query(
      `DELETE FROM qkd_key WHERE key_id IN (
         SELECT key_id FROM qkd_key WHERE destroyed_at < now() - $1 * interval '1 millisecond' ORDER BY destroyed_at LIMIT $2)
         AND NOT EXISTS (SELECT 1 FROM erase_queue WHERE queued_at < now() - $1 * interval '1 millisecond')`,
      [retentionMs, batch],
    );
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < batch) return total;
  }
}
