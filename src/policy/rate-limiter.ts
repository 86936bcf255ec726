import type { Coordinator } from '../coord/coordinator.js';
import { unavailable } from '../errors.js';
import type { StoredPolicy } from '../store/policies.js';

/** Keys charged to one pair at one second (what a refund gives back). */
export interface Charge {
  pair: string;
  second: number;
}

const WINDOW_S = 60;

/**
 * Keys per minute per SAE pair, over a sliding minute of one-second buckets kept by the coordinator: in this process
 * for a single node, in Redis for replicas, so that the limit holds for the KME as a whole. `charge` takes the keys
 * before they are handed out and `refundAll` gives them back when the request failed, so a refused or failed request
 * costs nothing and concurrent requests cannot together pass the limit. When the coordinator cannot count (Redis
 * away), a pair with a limit fails closed: its requests get a 503; pairs without a limit never ask it.
 */
export class PairRateLimiter {
  constructor(private readonly counters: Pick<Coordinator, 'take' | 'refund'>) {}

  /**
   * Charges `n` keys to every pair of a request whose policy limits keys per minute: all or nothing. When one pair
   * would pass its limit nothing is charged and the request gets a 503 that says how many were taken and when to try
   * again.
   */
  async charge(master: string, pairs: StoredPolicy[], n: number): Promise<Charge[]> {
    const charged: Charge[] = [];
    for (const p of pairs) {
      if (p.maxKeysPerMinute === undefined) continue;
      const pair = p.saes.join('/');
      const other = p.saes[0] === master ? p.saes[1] : p.saes[0];
      const got = await this.counters.take(counterName(pair), n, p.maxKeysPerMinute, WINDOW_S).catch(async (err: Error) => {
        await this.refundAll(charged, n);
        throw unavailable(`the keys-per-minute limit of ${master} and ${other} cannot be checked (${err.message}); nothing was taken: try again shortly`);
      });
      if (!got.ok) {
        await this.refundAll(charged, n);
        throw unavailable(
          `the policy of ${master} and ${other} allows ${p.maxKeysPerMinute} keys a minute at this KME; ${got.used} were taken in the last minute: try again in ${got.retryAfterS} s`,
        );
      }
      charged.push({ pair, second: got.second });
    }
    return charged;
  }

  /** Gives back what `charge` took (the request failed). Best effort: a refund Redis misses only makes the limit stricter. */
  async refundAll(charges: Charge[], n: number): Promise<void> {
    await Promise.all(charges.map((c) => this.counters.refund(counterName(c.pair), n, c.second, WINDOW_S).catch(() => undefined)));
  }
}

function counterName(pair: string): string {
  return `keys-per-minute:${pair}`;
}
