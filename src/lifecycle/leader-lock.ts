import pg from 'pg';
import type { Logger } from '../log.js';

/**
 * Leadership of one job among the replicas of a KME: a session-level Postgres advisory lock, held on a connection
 * of its own for as long as this process leads. A replica that dies loses its connection, the server releases the
 * lock, and the next replica to ask takes over. Advisory locks are per database, so two KMEs sharing a server do not
 * compete.
 *
 * `lead()` answers whether this process leads now: it connects and tries the lock when it does not hold it, and
 * checks the connection when it does (a lost connection means the lock is gone, possibly taken by another replica
 * already). Work done under the lock must still be safe if leadership was lost a moment ago: the sealer's writes are
 * guarded by the seal table's unique keys.
 */
export class LeaderLock {
  private client: pg.Client | undefined;
  private leading = false;
  /** The answer being found: several jobs may share one lock and ask at once. */
  private asking: Promise<boolean> | undefined;

  constructor(
    private readonly url: string,
    /** The job's name; hashed into the lock's key. */
    private readonly job: string,
    private readonly log: Logger,
  ) {}

  lead(): Promise<boolean> {
    return (this.asking ??= this.ask().finally(() => (this.asking = undefined)));
  }

  private async ask(): Promise<boolean> {
    try {
      if (!this.client) {
        const c = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 3_000, application_name: `qkd-kms ${this.job} leader` });
        c.on('error', () => this.lost(c)); // the server went away: so did the lock
        await c.connect();
        this.client = c;
      }
      if (this.leading) {
        await this.client.query('SELECT 1');
        return true;
      }
      const r = await this.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [`qkms:${this.job}`]);
      this.leading = r.rows[0]!.ok;
      if (this.leading) this.log.info({ job: this.job }, 'leading this job');
      return this.leading;
    } catch (err) {
      if (this.client) this.lost(this.client);
      throw err;
    }
  }

  private lost(c: pg.Client): void {
    if (this.client !== c) return;
    if (this.leading) this.log.warn({ job: this.job }, 'lost the leader lock (its database connection ended)');
    this.client = undefined;
    this.leading = false;
    c.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    this.leading = false;
    await c?.end().catch(() => undefined);
  }
}
