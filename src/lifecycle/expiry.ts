import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import { withTransaction, type Db } from '../store/db.js';
import { endKeys, expiredKeys } from '../store/keys.js';
import { startBackgroundJob } from './background-job.js';

/**
 * Nothing is reserved forever (DESIGN §5): keys whose time-to-live ran out — a master that got its keys but whose
 * slaves never came, keys burned by a lost response, reservations a peer made for a master that never got them —
 * become EXPIRED and their material is destroyed, audited at each KME that held them (each end runs its own job on
 * the expiry the origin set). Also forgets device refs long announced (the duplicate guard needs them only while a
 * device could offer the same key again).
 *
 * Expired material is destroyed within about a second of its time, and a backlog at up to ~2,000 keys a second.
 *
 * With replicas it runs where `leads` says (the housekeeping leader); running it twice would be harmless anyway
 * (SKIP LOCKED, and already-ended keys are skipped).
 */
export function startExpiryJob(
  db: Db,
  opts: { kmeId: string; log: Logger; everyMs?: number; batch?: number; refRetentionMs?: number; leads?: () => Promise<boolean> },
): () => Promise<void> {
  const batch = opts.batch ?? 200;
  const everyMs = opts.everyMs ?? 1_000;
  return startBackgroundJob({
    leads: opts.leads,
    what: 'key expiry',
    log: opts.log,
    everyMs,
    step: async () => {
      const n = await expireOnce(db, opts.kmeId, batch);
      if (n > 0) opts.log.info({ keys: n }, 'keys expired: material destroyed');
      // More are due: go on soon, but paced (at most ~2,000 keys a second with the defaults), so that a backlog
      // (slaves away for a while, a burst of burned keys) cannot starve deliveries of the database.
      if (n >= batch) return 100;
      await db.query(`DELETE FROM link_ref WHERE announced AND stored_at < now() - $1 * interval '1 millisecond'`, [
        opts.refRetentionMs ?? 86_400_000,
      ]);
      return everyMs;
    },
  });
}

/** Expires one batch of keys; returns how many. */
export async function expireOnce(db: Db, kmeId: string, batch: number): Promise<number> {
  return withTransaction(db, async (c) => {
    const due = await expiredKeys(c, batch);
    if (due.length === 0) return 0;
    const ended = await endKeys(c, due.map((k) => k.keyId), 'EXPIRED', (ids) =>
      auditBody({
        operation: 'expire',
        outcome: 'ok',
        actor: `kme:${kmeId}`,
        keyIds: ids,
        detail: { reason: 'time-to-live ran out before every slave fetched the key' },
      }),
    );
    return ended.length;
  });
}
