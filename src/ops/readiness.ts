import type { KeyWrapper } from '../hsm/key-wrapper.js';
import type { Db } from '../store/db.js';

/** One dependency a KME needs to serve keys; `run` throws (with a message fit for an operator) when it does not answer. */
export interface ReadinessCheck {
  name: string;
  run(): Promise<void>;
}

export interface ReadinessState {
  ready: boolean;
  /** Per check: 'ok', or why not. 'closing' when the process is shutting down. */
  checks: Record<string, string>;
}

/**
 * Whether this KME process should be sent requests (`GET /readyz` on the ops listener): its APIs listen, every check
 * answered within its time, and the process is not shutting down. The answer is kept `cacheMs`, so that probes from several load
 * balancers cost the database and the HSM one round each, not one per probe.
 */
export class Readiness {
  private last: { at: number; state: Promise<ReadinessState> } | undefined;
  private phase: 'starting' | 'serving' | 'closing' = 'starting';

  constructor(
    private readonly checks: ReadinessCheck[],
    private readonly opts: { timeoutMs: number; cacheMs: number } = { timeoutMs: 2_000, cacheMs: 1_000 },
  ) {}

  /** The APIs listen: from now on the checks decide. */
  markServing(): void {
    if (this.phase === 'starting') this.phase = 'serving';
  }

  /** From now on: not ready (a load balancer stops sending new requests while the ones in flight finish). */
  markClosing(): void {
    this.phase = 'closing';
  }

  state(): Promise<ReadinessState> {
    if (this.phase !== 'serving') return Promise.resolve({ ready: false, checks: { process: this.phase } });
    if (!this.last || Date.now() - this.last.at >= this.opts.cacheMs) this.last = { at: Date.now(), state: this.runChecks() };
    return this.last.state;
  }

  private async runChecks(): Promise<ReadinessState> {
    const results = await Promise.all(this.checks.map((c) => withTimeout(c.run(), this.opts.timeoutMs).then(() => 'ok', (err: Error) => err.message)));
    const checks = Object.fromEntries(this.checks.map((c, i) => [c.name, results[i]!]));
    return { ready: results.every((r) => r === 'ok'), checks };
  }
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The database answers a query. */
export function databaseCheck(db: Pick<Db, 'query'>): ReadinessCheck {
  return {
    name: 'database',
    run: async () => {
      await db.query('SELECT 1').catch((err: Error) => {
        throw new Error(`database: ${err.message}`);
      });
    },
  };
}

const PROBE = Buffer.from('qkms readiness probe', 'utf8');

/** The HSM seals and opens with the current KEK (a probe value, never key material). */
export function hsmCheck(wrapper: KeyWrapper): ReadinessCheck {
  return {
    name: 'hsm',
    run: async () => {
      try {
        const sealed = await wrapper.encrypt(PROBE, PROBE);
        const opened = await wrapper.decrypt(sealed, PROBE);
        if (!opened.equals(PROBE)) throw new Error('the probe did not come back');
      } catch (err) {
        throw new Error(`hsm: ${(err as Error).message}`);
      }
    },
  };
}
