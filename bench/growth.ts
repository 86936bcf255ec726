// How much the KME's database grows per megabit ingested and per key delivered. Read from PostgreSQL's own size
// functions over whatever tables the KME has: the storage layer is being rewritten, so nothing here names a table.
//
// No CHECKPOINT is needed: a relation's files grow when a page is allocated (at the INSERT), not when a checkpoint
// writes it, so the sizes are current while the KME runs. WAL is cluster-wide and not counted.
import pg from 'pg';

export interface DbSize {
  /** pg_database_size: everything, system catalogs included. */
  database: number;
  /** Sum of pg_total_relation_size (heap, indexes, TOAST) over the tables outside the system schemas. */
  tables: number;
  byTable: Record<string, number>;
}

export async function dbSize(url: string): Promise<DbSize> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const db = await c.query('SELECT pg_database_size(current_database())::bigint::text AS n');
    const rel = await c.query(`
      SELECT c.relname AS name, pg_total_relation_size(c.oid)::bigint::text AS n
        FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p', 'm') AND s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg_toast%'`);
    const byTable: Record<string, number> = {};
    for (const r of rel.rows as Array<{ name: string; n: string }>) byTable[r.name] = Number(r.n);
    return { database: Number((db.rows[0] as { n: string }).n), tables: Object.values(byTable).reduce((a, b) => a + b, 0), byTable };
  } finally {
    await c.end();
  }
}

/** What a measurement needs from the running KME at one moment: its pool and what its link stored so far. */
export interface PoolReading {
  /** stored_key_count of the ETSI status (keys of key_size bits). */
  stored: number;
  /** status_extension.qkms_link.ingested_blocks when the KME reports it (blocks since it started). */
  ingestedBlocks?: number;
}

export interface GrowthPoint {
  size: DbSize;
  pool: PoolReading;
}

/**
 * The database size together with the pool, read so that they describe the same moment: the pool is read before
 * and after the size query and the two readings averaged (ingest keeps going while the size is summed).
 */
export async function growthPoint(url: string, read: () => Promise<PoolReading>): Promise<GrowthPoint> {
  const a = await read();
  const size = await dbSize(url);
  const b = await read();
  const mid = (x?: number, y?: number) => (x === undefined || y === undefined ? undefined : (x + y) / 2);
  const ingestedBlocks = mid(a.ingestedBlocks, b.ingestedBlocks);
  return { size, pool: { stored: (a.stored + b.stored) / 2, ...(ingestedBlocks !== undefined ? { ingestedBlocks } : {}) } };
}

/** Tables that grew the most between two sizes (where the bytes went), largest first. */
export function tableGrowth(before: DbSize, after: DbSize, top = 6): Record<string, number> {
  const names = new Set([...Object.keys(before.byTable), ...Object.keys(after.byTable)]);
  return Object.fromEntries(
    [...names]
      .map((n) => [n, (after.byTable[n] ?? 0) - (before.byTable[n] ?? 0)] as const)
      .filter(([, d]) => d !== 0)
      .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]))
      .slice(0, top),
  );
}

export interface IngestGrowth {
  what: string;
  megabits_ingested: number;
  bytes_before: number;
  bytes_after: number;
  database_bytes_before: number;
  database_bytes_after: number;
  bytes_per_megabit: number;
  /** The same per 256-bit key ingested (what one pool entry costs on disk). */
  bytes_per_key: number;
  table_growth: Record<string, number>;
}

/** Growth over a stretch where the KME only ingested (nothing delivered): the pool's rise is what was ingested. */
export function ingestGrowth(what: string, a: GrowthPoint, b: GrowthPoint, keyBits: number): IngestGrowth {
  const keys = b.pool.stored - a.pool.stored;
  const megabits = (keys * keyBits) / 1e6;
  const grew = b.size.tables - a.size.tables;
  return {
    what,
    megabits_ingested: Math.round(megabits * 10) / 10,
    bytes_before: a.size.tables,
    bytes_after: b.size.tables,
    database_bytes_before: a.size.database,
    database_bytes_after: b.size.database,
    bytes_per_megabit: megabits > 0 ? Math.round(grew / megabits) : NaN,
    bytes_per_key: keys > 0 ? Math.round((10 * grew) / keys) / 10 : NaN,
    table_growth: tableGrowth(a.size, b.size),
  };
}

export interface DeliveryGrowth {
  what: string;
  keys_delivered: number;
  /** Keys the link stored meanwhile (the KME refills as it delivers); their rows are in the growth too. */
  keys_ingested_meanwhile: number;
  bytes_before: number;
  bytes_after: number;
  database_bytes_before: number;
  database_bytes_after: number;
  /** All growth over keys delivered. */
  bytes_per_key_delivered: number;
  /** The same less what the ingest meanwhile cost at the ingest-only rate (when that was measured). */
  bytes_per_key_delivered_net_of_ingest?: number;
  table_growth: Record<string, number>;
}

/**
 * Growth over a stretch where the KME delivered keys while its link may have kept ingesting. The pool is every key
 * not delivered yet, so delivered = ingested − the pool's change. `delivered` is the load generator's count when it
 * has one; otherwise what was ingested comes from the link figures (qkms_link.ingested_blocks; a block is one key of
 * key_size bits, the KME's block size). `ingestBytesPerKey`, from an ingest-only stretch, takes the ingest's share
 * of the growth out.
 */
export function deliveryGrowth(
  what: string,
  a: GrowthPoint,
  b: GrowthPoint,
  opts: { delivered?: number; ingestBytesPerKey?: number },
): DeliveryGrowth | undefined {
  const change = b.pool.stored - a.pool.stored;
  let delivered = opts.delivered;
  let ingested: number;
  if (delivered !== undefined) ingested = change + delivered;
  else if (a.pool.ingestedBlocks !== undefined && b.pool.ingestedBlocks !== undefined) {
    ingested = b.pool.ingestedBlocks - a.pool.ingestedBlocks;
    delivered = ingested - change;
  } else return undefined; // neither count: no figure rather than a wrong one
  delivered = Math.round(delivered);
  ingested = Math.max(0, ingested);
  const grew = b.size.tables - a.size.tables;
  const per = (bytes: number) => (delivered! > 0 ? Math.round((10 * bytes) / delivered!) / 10 : NaN);
  const net = opts.ingestBytesPerKey;
  return {
    what,
    keys_delivered: delivered,
    keys_ingested_meanwhile: Math.round(ingested),
    bytes_before: a.size.tables,
    bytes_after: b.size.tables,
    database_bytes_before: a.size.database,
    database_bytes_after: b.size.database,
    bytes_per_key_delivered: per(grew),
    ...(net !== undefined && Number.isFinite(net) ? { bytes_per_key_delivered_net_of_ingest: per(grew - ingested * net) } : {}),
    table_growth: tableGrowth(a.size, b.size),
  };
}

export interface GrowthReport {
  ingest?: IngestGrowth;
  delivery: DeliveryGrowth[];
  postgres_autovacuum?: string;
}

const kb = (n: number) => `${(n / 1024).toLocaleString('en-US', { maximumFractionDigits: 1 })} KiB`;
const mb = (n: number) => `${(n / 2 ** 20).toLocaleString('en-US', { maximumFractionDigits: 1 })} MiB`;
const tables = (t: Record<string, number>) => Object.entries(t).map(([n, d]) => `${n} ${d >= 0 ? '+' : ''}${mb(d)}`).join(', ');

export function printGrowth(g: GrowthReport): void {
  if (!g.ingest && g.delivery.length === 0) return;
  console.log(`\n── Database growth (sum of pg_total_relation_size over the KME's tables; autovacuum ${g.postgres_autovacuum ?? 'unknown'})`);
  if (g.ingest) {
    const i = g.ingest;
    console.log(`   ingest (${i.what}): ${kb(i.bytes_per_megabit)} per megabit ingested (${i.bytes_per_key} bytes per 256-bit key); ` +
      `${mb(i.bytes_before)} → ${mb(i.bytes_after)} for ${i.megabits_ingested.toLocaleString('en-US')} Mbit`);
    console.log(`     where: ${tables(i.table_growth)}`);
  }
  for (const d of g.delivery) {
    console.log(`   delivery (${d.what}): ${d.bytes_per_key_delivered} bytes per key delivered` +
      (d.bytes_per_key_delivered_net_of_ingest !== undefined ? ` (${d.bytes_per_key_delivered_net_of_ingest} net of the ingest meanwhile)` : '') +
      `; ${mb(d.bytes_before)} → ${mb(d.bytes_after)} for ${d.keys_delivered.toLocaleString('en-US')} keys delivered, ` +
      `${d.keys_ingested_meanwhile.toLocaleString('en-US')} ingested meanwhile`);
    console.log(`     where: ${tables(d.table_growth)}`);
  }
}
