import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { startBackgroundJob } from './background-job.js';

/**
 * Keeps the planner's statistics of the pool tables current. The claim and the delivery statements are only fast
 * with the plans that good statistics give (index scans on the partial index and the primary key); with stale or
 * missing statistics — autovacuum switched off, or lagging behind a burst of ingest — the planner can switch to
 * sorting the whole pool on every request. ANALYZE samples a fixed number of rows, so it stays cheap at any size.
 *
 * With several replicas this becomes a leader-only job (a later issue); running it twice is harmless meanwhile.
 */
export function startStatisticsJob(db: Db, log: Logger, opts: { firstMs?: number; everyMs?: number } = {}): () => Promise<void> {
  return startBackgroundJob({
    what: 'refreshing table statistics',
    log,
    everyMs: opts.everyMs ?? 30_000,
    firstMs: opts.firstMs ?? 5_000,
    step: async () => {
      await db.query('ANALYZE key_chunk, erase_queue, qkd_key, key_slave, pool_count');
    },
  });
}
