import t from 'tap';
import { MIN_ROWS_TO_ANALYZE, refreshStatistics } from '../../src/lifecycle/statistics.js';
import type { Db } from '../../src/store/db.js';
import { ensureLink } from '../../src/store/pool.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';

// The statistics job on real PostgreSQL: it analyzes the pool tables that hold enough rows, and leaves nearly empty
// ones alone (statistics of an empty qkd_key made every later foreign-key check of the key's slave rows scan the whole table).

let m: MigratedDatabase;
let db: Db;

t.before(async () => {
  m = await migratedDatabase({ poolSize: 2 });
  db = m.db;
  await ensureLink(db, { linkId: 'L', localKmeId: 'K', peerKmeId: 'K', primaryKmeId: 'K', blockBits: 256 });
});
t.teardown(async () => {
  await m?.close();
});

const analyzed = async (table: string) =>
  (await db.query(`SELECT last_analyze IS NOT NULL AS done FROM pg_stat_user_tables WHERE relname = $1`, [table])).rows[0]!.done as boolean;

/** The cumulative statistics reach pg_stat_* when a backend flushes them; wait until the count shows. */
async function liveRowsShow(table: string, n: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { rows } = await db.query(`SELECT pg_stat_get_live_tuples($1::regclass)::int AS n`, [table]);
    if ((rows[0] as { n: number }).n >= n) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${table}: live row count never reached ${n}`);
}

t.test('nearly empty tables are not analyzed; a table with enough rows is', async (t) => {
  t.same(await refreshStatistics(db), [], 'a new database: nothing to analyze');
  t.notOk(await analyzed('qkd_key'));
  await db.query(`INSERT INTO erase_queue (link_id, seqs) SELECT 'L', int8multirange(int8range(g, g + 1)) FROM generate_series(1, $1) AS g`, [
    MIN_ROWS_TO_ANALYZE,
  ]);
  await liveRowsShow('erase_queue', MIN_ROWS_TO_ANALYZE);
  t.same(await refreshStatistics(db), ['erase_queue']);
  t.ok(await analyzed('erase_queue'), 'analyzed');
  t.notOk(await analyzed('qkd_key'), 'the empty key table keeps no statistics (planned as ten pages: index scans)');
  t.notOk(await analyzed('pool_count'), 'nor the counters (16 rows per link)');
});
