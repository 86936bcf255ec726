// How long destroyed material waits to be erased from its chunk (docs/storage.md): the age of the oldest entry of
// every KME's erase_queue, sampled every second for the whole run. The README states the bound this measures.
import pg from 'pg';
import { current } from './timeline.js';

export interface ErasureReport {
  interval_seconds: number;
  /** The oldest entry seen waiting, in seconds, over the whole run, and in which part of it. */
  max_lag_seconds: number;
  max_during?: string;
  /** The most entries seen waiting at once. */
  max_queued: number;
  samples: number;
}

/** Polls the erase queue of every KME database it is told about (one pooled connection each). */
class EraseLagSampler {
  private readonly pools = new Map<string, pg.Pool>();
  private timer: NodeJS.Timeout | undefined;
  private report: ErasureReport = { interval_seconds: 1, max_lag_seconds: 0, max_queued: 0, samples: 0 };

  track(databaseUrl: string): void {
    if (this.pools.has(databaseUrl)) return;
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
    // A run that fails before stop() drops the databases under the idle connection: unhandled, its error ended the
    // bench in the middle of its clean-up (a reference server was left running).
    pool.on('error', () => undefined);
    this.pools.set(databaseUrl, pool);
  }

  start(intervalMs: number): void {
    this.report.interval_seconds = intervalMs / 1000;
    this.timer = setInterval(() => void this.sample(), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<ErasureReport> {
    clearInterval(this.timer);
    await Promise.all([...this.pools.values()].map((p) => p.end().catch(() => undefined)));
    return this.report;
  }

  private async sample(): Promise<void> {
    for (const pool of this.pools.values()) {
      // Before its migrations ran, or after its database was dropped, a KME has no queue to read: nothing to see.
      const row = await pool
        .query('SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at)), 0)::float8 AS lag, count(*)::int AS n FROM erase_queue')
        .then((r) => r.rows[0] as { lag: number; n: number }, () => undefined);
      if (!row) continue;
      this.report.samples++;
      this.report.max_queued = Math.max(this.report.max_queued, row.n);
      if (row.lag > this.report.max_lag_seconds) {
        this.report.max_lag_seconds = Math.round(row.lag * 10) / 10;
        this.report.max_during = current();
      }
    }
  }
}

export const eraseLag = new EraseLagSampler();

export function printErasure(r: ErasureReport): void {
  console.log(`\n── Erasure of destroyed material (oldest erase_queue entry, every ${r.interval_seconds} s, every KME)`);
  console.log(
    `   longest wait ${r.max_lag_seconds.toFixed(1)} s${r.max_during ? ` (during ${r.max_during})` : ''}; ` +
      `at most ${r.max_queued} entries waiting; ${r.samples} samples`,
  );
}
