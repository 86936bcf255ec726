import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { startBackgroundJob } from '../lifecycle/background-job.js';
import type { Db } from '../store/db.js';
import { loadPolicies, pairOf, policiesStamp, seedPolicies, type PairPolicy, type StoredPolicy } from '../store/policies.js';

/**
 * The policies per SAE pair (src/store/policies.ts), held in memory for the delivery path: what applies to a request
 * between a master and its slaves. Reloaded when this process changes one (`reload`) and when another did (a poll
 * of the table's stamp).
 */
export class PolicyBook {
  private byPair = new Map<string, StoredPolicy>();
  private stamp = '';

  constructor(private readonly db: Db) {}

  /** Seeds the table from the config file's policies (audited as this KME), then loads it. */
  static async open(db: Db, config: Pick<Config, 'kme_id' | 'policies'>): Promise<PolicyBook> {
    await seedPolicies(db, policiesOf(config), { actor: `kme:${config.kme_id}` });
    const book = new PolicyBook(db);
    await book.reload();
    return book;
  }

  async reload(): Promise<void> {
    const stamp = await policiesStamp(this.db);
    this.byPair = new Map((await loadPolicies(this.db)).map((p) => [p.saes.join('/'), p]));
    this.stamp = stamp;
  }

  start(everyMs: number, log: Logger): () => Promise<void> {
    return startBackgroundJob({
      what: 'watching the policies per SAE pair',
      log,
      everyMs,
      step: async () => {
        if ((await policiesStamp(this.db)) !== this.stamp) await this.reload();
      },
    });
  }

  all(): StoredPolicy[] {
    return [...this.byPair.values()];
  }

  of(x: string, y: string): StoredPolicy | undefined {
    return this.byPair.get(pairOf(x, y).join('/'));
  }

  /**
   * Whether this KME's policy lets the pair's keys be made and sent with ML-KEM-768+X25519 when its QKD link cannot
   * serve them. A pair without a policy fails closed.
   */
  allowsFallback(master: string, slave: string): boolean {
    return this.of(master, slave)?.linkFailure === 'pqc_fallback';
  }

  /**
   * What applies to keys a master shares with these slaves: each pair's own limits, the shortest time-to-live of
   * them all, their tags merged (the path's slave first: on a clash its pair's tag wins), and whether the request
   * may fall back to a PQC key: only when every pair allows it, since one key goes to all the slaves.
   */
  forRequest(master: string, slaves: string[]): { pairs: StoredPolicy[]; keyTtlSeconds?: number; tags: Record<string, string>; fallback: boolean } {
    const pairs = slaves.flatMap((s) => this.of(master, s) ?? []);
    const ttls = pairs.flatMap((p) => (p.keyTtlSeconds !== undefined ? [p.keyTtlSeconds] : []));
    const tags: Record<string, string> = {};
    for (const p of [...pairs].reverse()) Object.assign(tags, p.tags);
    const fallback = slaves.length > 0 && slaves.every((s) => this.allowsFallback(master, s));
    return { pairs, ...(ttls.length ? { keyTtlSeconds: Math.min(...ttls) } : {}), tags, fallback };
  }
}

/** The config file's policies, as the table holds them. */
export function policiesOf(config: Pick<Config, 'policies'>): PairPolicy[] {
  return config.policies.map((p) => ({
    saes: pairOf(p.saes[0]!, p.saes[1]!),
    ...(p.key_ttl_seconds !== undefined ? { keyTtlSeconds: p.key_ttl_seconds } : {}),
    ...(p.min_pool_keys !== undefined ? { minPoolKeys: p.min_pool_keys } : {}),
    ...(p.max_keys_per_minute !== undefined ? { maxKeysPerMinute: p.max_keys_per_minute } : {}),
    ...(p.link_failure !== undefined ? { linkFailure: p.link_failure } : {}),
    tags: p.tags ?? {},
    source: 'config' as const,
  }));
}
