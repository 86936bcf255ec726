import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { startBackgroundJob } from './background-job.js';

/**
 * Keeps the pending list of the custody log's key_ID index short, off the delivery path. PostgreSQL adds a GIN
 * index's new entries to a pending list and moves the list into the index when it passes 4 MB: autovacuum does it in
 * the background where it runs often enough; otherwise the statement whose insert overflows the list does it, and a
 * key delivery waits 90–240 ms (seen on the bench with autovacuum off: the p99 of 128-key cross-KME requests fell
 * from 478–514 ms to 345–372 ms with this job). A second's worth of entries is a small move; an empty list costs one
 * cheap statement. Leader-only with replicas (`leads`); two at once would only find less to do.
 */
export function startCustodyIndexFlushJob(db: Db, log: Logger, opts: { everyMs?: number; leads?: () => Promise<boolean> } = {}): () => Promise<void> {
  return startBackgroundJob({
    leads: opts.leads,
    what: "moving the custody log index's pending entries",
    log,
    everyMs: opts.everyMs ?? 1_000,
    step: () => flushCustodyIndex(db).then(() => undefined),
  });
}

/** Moves the pending entries into the index (migrations/0016_custody_index_flush.sql); returns the pages it emptied. */
export async function flushCustodyIndex(db: Db): Promise<number> {
  const { rows } = await db.query('SELECT qkms_flush_custody_index()::int AS pages');
  return (rows[0] as { pages: number }).pages;
}
