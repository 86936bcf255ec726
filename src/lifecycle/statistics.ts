import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { startBackgroundJob } from './background-job.js';

/**
 * Below this many live rows a table is not analyzed. Statistics taken of a nearly empty table make the planner
 * choose sequential scans (cheapest for a page or two), and those plans stay cached while the table grows: the
 * foreign-key check of every new slave row (key_slave, before migration 0005) then scanned all of qkd_key (seen on
 * the bench: 14 ms per transaction after the first statistics of a new KME were taken before its first key). A table
 * never analyzed is planned as if it held ten pages, which gives index scans; a table that shrank keeps the
 * statistics of its larger self, which also gives index scans.
 */
export const MIN_ROWS_TO_ANALYZE = 1_000;

/**
 * Keeps the planner's statistics of the pool tables current. The claim and the delivery statements are only fast
 * with the plans that good statistics give (index scans on the partial index and the primary key); with stale or
 * missing statistics — autovacuum switched off, or lagging behind a burst of ingest — the planner can switch to
 * sorting the whole pool on every request. ANALYZE samples a fixed number of rows, so it stays cheap at any size.
 *
 * With replicas it runs where `leads` says (the housekeeping leader); running it twice would be harmless anyway.
 */
export function startStatisticsJob(db: Db, log: Logger, opts: { firstMs?: number; everyMs?: number; leads?: () => Promise<boolean> } = {}): () => Promise<void> {
  return startBackgroundJob({
    leads: opts.leads,
    what: 'refreshing table statistics',
    log,
    everyMs: opts.everyMs ?? 30_000,
    firstMs: opts.firstMs ?? 5_000,
    step: () => refreshStatistics(db).then(() => undefined),
  });
}

/**
 * Analyzes the pool's tables (key_chunk, erase_queue, qkd_key, pool_count: those the delivery path's plans depend on)
 * that hold enough rows to be planned from their statistics; returns their names. Through a function of migration
 * 0017, which runs as the tables' owner: ANALYZE needs the owner, and the KME may run as a role that owns nothing.
 */
export async function refreshStatistics(db: Db): Promise<string[]> {
  const { rows } = await db.query('SELECT qkms_refresh_statistics($1) AS names', [MIN_ROWS_TO_ANALYZE]);
  return (rows[0] as { names: string[] }).names;
}
