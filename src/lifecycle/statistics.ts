import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { startBackgroundJob } from './background-job.js';

/** The pool's tables, whose plans the delivery path depends on. */
const TABLES = ['key_chunk', 'erase_queue', 'qkd_key', 'pool_count'];

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

/** Analyzes the pool tables that hold enough rows to be planned from their statistics; returns their names. */
export async function refreshStatistics(db: Db): Promise<string[]> {
  const { rows } = await db.query(
    `SELECT c.relname AS name FROM pg_class c
      WHERE c.oid = ANY($1::regclass[]) AND pg_stat_get_live_tuples(c.oid) >= $2
      ORDER BY c.relname`,
    [TABLES, MIN_ROWS_TO_ANALYZE],
  );
  const names = (rows as Array<{ name: string }>).map((r) => r.name);
  // Names from the fixed list above, as PostgreSQL spells them: safe to put in the statement.
  if (names.length > 0) await db.query(`ANALYZE ${names.join(', ')}`);
  return names;
}
