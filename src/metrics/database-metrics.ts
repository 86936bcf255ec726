import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { ScrapeRead } from './scrape-read.js';

export interface DatabaseFigures {
  /** Per link: owned AVAILABLE blocks (keys of keys.key_size bits) and those stored but not yet confirmed by the peer. */
  pools: Array<{ linkId: string; blockBits: number; available: number; unconfirmed: number }>;
  /** The custody log: the last sequence number given out, the size of the sealed tree, and ages in seconds. */
  audit: { lastSeq: number; sealedSize: number; lastCheckpointAgeSeconds?: number; oldestUnsealedAgeSeconds?: number };
}

/**
 * Reads what only the database knows, in two cheap statements, once per scrape: the pool counters (16 shard rows
 * per link, src/store/pool.ts) and the custody log's edge (the newest seal, the newest sequence number and the
 * oldest event past the seal, all by primary key). Nothing on the request path reads them.
 */
export async function readDatabaseFigures(db: Pick<Db, 'query'>): Promise<DatabaseFigures> {
  const [pools, audit] = await Promise.all([
    db.query<{ link_id: string; block_bits: number; a: string; i: string }>(
      `SELECT p.link_id, l.block_bits, sum(p.available)::bigint::text AS a, sum(p.ingested)::bigint::text AS i
         FROM pool_count p JOIN link l USING (link_id) GROUP BY p.link_id, l.block_bits`,
    ),
    db.query<{ last_seq: string | null; sealed: string | null; checkpoint_age: number | null; oldest_age: number | null }>(
      `SELECT (SELECT max(seq) FROM audit_event)::text AS last_seq,
              s.tree_size::text AS sealed,
              extract(epoch FROM now() - s.sealed_at)::float8 AS checkpoint_age,
              (SELECT extract(epoch FROM now() - e.at)::float8 FROM audit_event e
                WHERE e.seq > COALESCE(s.tree_size, 0) ORDER BY e.seq LIMIT 1) AS oldest_age
         FROM (SELECT 1) AS one
         LEFT JOIN LATERAL (SELECT tree_size, sealed_at FROM audit_seal ORDER BY tree_size DESC LIMIT 1) AS s ON true`,
    ),
  ]);
  const a = audit.rows[0]!;
  return {
    pools: pools.rows.map((r) => ({ linkId: r.link_id, blockBits: r.block_bits, available: Number(r.a), unconfirmed: Number(r.i) })),
    audit: {
      lastSeq: Number(a.last_seq ?? 0),
      sealedSize: Number(a.sealed ?? 0),
      ...(a.checkpoint_age !== null ? { lastCheckpointAgeSeconds: a.checkpoint_age } : {}),
      ...(a.oldest_age !== null ? { oldestUnsealedAgeSeconds: Math.max(0, a.oldest_age) } : {}),
    },
  };
}

/**
 * Gauges computed at scrape time from the database (pool levels, the sealer's lag), one shared read per scrape with
 * a short timeout: when the database does not answer in time the scrape leaves these series out and
 * `qkms_metrics_database_read_success` says 0, instead of holding the scrape.
 */
export function registerDatabaseMetrics(registry: Registry, deps: { db: Pick<Db, 'query'>; log: Logger; timeoutMs?: number }): void {
  const read = new ScrapeRead(() => readDatabaseFigures(deps.db), { timeoutMs: deps.timeoutMs ?? 1_000, reuseMs: 1_000 });
  let warned = false;
  const figures = async () => {
    const f = await read.get();
    if (!f && !warned) deps.log.warn({ reason: read.lastError }, 'metrics: could not read the pool levels and the sealer lag from the database');
    warned = !f;
    return f;
  };
  const registers = [registry];
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge, f: DatabaseFigures) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers,
      async collect() {
        const f = await figures();
        this.reset();
        if (f) fill(this, f);
      },
    });
  gauge('qkms_pool_available_keys', 'Keys (of keys.key_size bits) in the link pool that this KME can hand out now.', ['link_id'], (g, f) => {
    for (const p of f.pools) g.labels(p.linkId).set(p.available);
  });
  gauge('qkms_pool_available_bits', 'Bits of key material in the link pool that this KME can hand out now.', ['link_id'], (g, f) => {
    for (const p of f.pools) g.labels(p.linkId).set(p.available * p.blockBits);
  });
  gauge('qkms_pool_unconfirmed_keys', 'Keys stored at this end of the link that the peer KME has not confirmed yet (not deliverable yet).', ['link_id'], (g, f) => {
    for (const p of f.pools) g.labels(p.linkId).set(p.unconfirmed);
  });
  gauge('qkms_audit_unsealed_events', 'Custody-log sequence numbers given out but not yet sealed into a signed checkpoint.', [], (g, f) => {
    g.set(Math.max(0, f.audit.lastSeq - f.audit.sealedSize));
  });
  gauge('qkms_audit_oldest_unsealed_event_age_seconds', 'Age of the oldest custody-log event not yet sealed; 0 when every event is sealed.', [], (g, f) => {
    g.set(f.audit.oldestUnsealedAgeSeconds ?? 0);
  });
  gauge('qkms_audit_last_checkpoint_age_seconds', 'Seconds since the sealer recorded its last checkpoint (an idle log keeps its last one); absent before the first.', [], (g, f) => {
    if (f.audit.lastCheckpointAgeSeconds !== undefined) g.set(f.audit.lastCheckpointAgeSeconds);
  });
  new Gauge({
    name: 'qkms_metrics_database_read_success',
    help: 'Whether this scrape read the database-derived figures (pool levels, sealer lag): 1 yes, 0 the database failed or did not answer within 1 s.',
    registers,
    async collect() {
      this.set((await figures()) ? 1 : 0);
    },
  });
}
