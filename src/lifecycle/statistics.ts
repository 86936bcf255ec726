import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { Repeater } from './repeater.js';

/**
 * Keeps the planner's statistics of the pool tables current. The claim and the delivery statements are only fast
 * with the plans that good statistics give (index scans on the partial index and the primary key); with stale or
 * missing statistics — autovacuum switched off, or lagging behind a burst of ingest — the planner can switch to
 * sorting the whole pool on every request. ANALYZE samples a fixed number of rows, so it stays cheap at any size.
 *
 * With several replicas this becomes a leader-only job (a later issue); running it twice is harmless meanwhile.
 */
export function startStatisticsJob(db: Db, log: Logger, opts: { firstMs?: number; everyMs?: number } = {}): () => Promise<void> {
  const loop = new Repeater(async () => {
    try {
      await db.query('ANALYZE key_chunk, erase_queue, qkd_key, key_slave, pool_count');
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'could not refresh table statistics');
    }
    return opts.everyMs ?? 30_000;
  });
  loop.start(opts.firstMs ?? 5_000);
  return () => loop.stop();
}
