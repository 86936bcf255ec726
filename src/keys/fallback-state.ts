import { auditBody, insertAuditSql } from '../audit/event.js';
import type { Logger } from '../log.js';
import { withTransaction, type Db, type DbClient } from '../store/db.js';

/**
 * Which links' pairs get fallback keys now (`link.fallback_since`, migration 0013), and how many fallback keys each
 * pair got from this process: the switch to fallback and back are each one `fallback` event of the custody log.
 *
 * The switch to fallback is recorded in the transaction of the first fallback key; the switch back at the first QKD
 * delivery on the link once no fallback key was made there for `QUIET_MS`, in a transaction of its own (the QKD keys'
 * own events say when they were served). The quiet time keeps a pool that refills slowly — it serves small requests
 * and not large ones — from flapping between the two in the log.
 * The in-memory image only saves the hot path a query: the database decides, so two processes never both record one
 * switch.
 */
export class FallbackState {
  private readonly active = new Set<string>();
  private readonly keysByPair = new Map<string, number>();
  /** When this process last made fallback keys on each link (epoch ms). */
  private readonly lastMade = new Map<string, number>();

  constructor(private readonly deps: { db: Db; kmeId: string; log: Logger }) {}

  /** Loads the links in fallback (after a restart, their first QKD delivery records the switch back). */
  async load(): Promise<this> {
    const { rows } = await this.deps.db.query<{ link_id: string }>(`SELECT link_id FROM link WHERE fallback_since IS NOT NULL`);
    for (const r of rows) this.active.add(r.link_id);
    return this;
  }

  /** In the transaction that makes fallback keys for a link's pair: records the switch if the link was on QKD. */
  async started(c: DbClient, linkId: string, why: string): Promise<void> {
    this.lastMade.set(linkId, Date.now());
    if (this.active.has(linkId)) return;
    const { rowCount } = await c.query(`UPDATE link SET fallback_since = now() WHERE link_id = $1 AND fallback_since IS NULL`, [linkId]);
    if (rowCount) {
      const detail = { link_id: linkId, change: 'start', reason: why };
      await c.query(insertAuditSql(1), [[auditBody({ operation: 'fallback', outcome: 'ok', actor: `kme:${this.deps.kmeId}`, detail })]]);
      this.deps.log.warn(detail, 'link failure: this link\'s pairs whose policy allows it now get post-quantum fallback keys');
    }
    this.active.add(linkId);
  }

  /** After QKD material served a request on the link: records the switch back once (after the quiet time). Never throws. */
  async qkdServed(linkId: string): Promise<void> {
    if (!this.active.has(linkId) || Date.now() - (this.lastMade.get(linkId) ?? 0) < QUIET_MS) return;
    this.active.delete(linkId);
    try {
      await withTransaction(this.deps.db, async (c) => {
        const { rows } = await c.query<{ since: Date }>(
          `UPDATE link l SET fallback_since = NULL FROM (SELECT fallback_since AS since FROM link WHERE link_id = $1 FOR UPDATE) o
            WHERE l.link_id = $1 AND o.since IS NOT NULL RETURNING o.since`,
          [linkId],
        );
        if (!rows[0]) return;
        const detail = { link_id: linkId, change: 'end', since: rows[0].since.toISOString() };
        await c.query(insertAuditSql(1), [[auditBody({ operation: 'fallback', outcome: 'ok', actor: `kme:${this.deps.kmeId}`, detail })]]);
        this.deps.log.info(detail, 'link back: QKD material serves its pairs again');
      });
    } catch (err) {
      this.active.add(linkId); // the next QKD delivery tries again
      this.deps.log.error({ err: { message: (err as Error).message }, link: linkId }, 'could not record the switch back to QKD material');
    }
  }

  isActive(linkId: string): boolean {
    return this.active.has(linkId);
  }

  /** Counts fallback keys delivered to a master for a pair (status_extension and the metrics show it). */
  count(master: string, slave: string, keys: number): void {
    const pair = `${master}\0${slave}`;
    this.keysByPair.set(pair, (this.keysByPair.get(pair) ?? 0) + keys);
  }

  /** Fallback keys this process delivered for the pair since it started, whichever of the two was the master. */
  keys(master: string, slave: string): number {
    return (this.keysByPair.get(`${master}\0${slave}`) ?? 0) + (this.keysByPair.get(`${slave}\0${master}`) ?? 0);
  }

  /** Per (master, slave) pair, the fallback keys this process delivered since it started. */
  deliveredByPair(): Array<{ master: string; slave: string; keys: number }> {
    return [...this.keysByPair].map(([pair, keys]) => {
      const [master = '', slave = ''] = pair.split('\0');
      return { master, slave, keys };
    });
  }
}

/** How long a link must go without fallback keys before a QKD delivery records the switch back. */
export const QUIET_MS = 5_000;
