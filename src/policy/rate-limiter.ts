import { unavailable } from '../errors.js';
import type { StoredPolicy } from '../store/policies.js';

/** Keys charged to one pair at one second (what a refund gives back). */
export interface Charge {
  pair: string;
  second: number;
}

/**
 * Keys per minute per SAE pair, counted in this process over a sliding minute of one-second buckets. `take` charges
 * the keys before they are handed out and `refund` gives them back when the request failed, so a refused or failed
 * request costs nothing and concurrent requests cannot together pass the limit. Replicas each count their own
 * (a Redis-backed counter is the replicas issue's).
 */
export class PairRateLimiter {
  private readonly windows = new Map<string, { buckets: number[]; second: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Charges `n` keys to `pair` if the last minute's total stays within `limit`; otherwise returns the seconds until it would. */
  take(pair: string, n: number, limit: number): { ok: true; second: number } | { ok: false; retryAfterS: number; used: number } {
    const w = this.window(pair);
    const used = w.buckets.reduce((a, b) => a + b, 0);
    if (used + n > limit) {
      // The oldest buckets leave the window first: how long until enough of them have.
      let freed = 0;
      let wait = 60;
      for (let i = 1; i <= 60; i++) {
        freed += w.buckets[(w.second + i) % 60]!;
        if (used - freed + n <= limit) {
          wait = i;
          break;
        }
      }
      return { ok: false, retryAfterS: wait, used };
    }
    w.buckets[w.second % 60]! += n;
    return { ok: true, second: w.second };
  }

  /**
   * Charges `n` keys to every pair of a request whose policy limits keys per minute: all or nothing. When one pair
   * would pass its limit nothing is charged and the request gets a 503 that says how many were taken and when to try
   * again.
   */
  charge(master: string, pairs: StoredPolicy[], n: number): Charge[] {
    const charged: Charge[] = [];
    for (const p of pairs) {
      if (p.maxKeysPerMinute === undefined) continue;
      const pair = p.saes.join('/');
      const got = this.take(pair, n, p.maxKeysPerMinute);
      if (!got.ok) {
        this.refundAll(charged, n);
        const other = p.saes[0] === master ? p.saes[1] : p.saes[0];
        throw unavailable(
          `the policy of ${master} and ${other} allows ${p.maxKeysPerMinute} keys a minute at this KME; ${got.used} were taken in the last minute: try again in ${got.retryAfterS} s`,
        );
      }
      charged.push({ pair, second: got.second });
    }
    return charged;
  }

  /** Gives back what `charge` took (the request failed). */
  refundAll(charges: Charge[], n: number): void {
    for (const c of charges) this.refund(c.pair, n, c.second);
  }

  /** Gives back keys charged at `second` (what `take` returned), if that second is still in the window. */
  refund(pair: string, n: number, second: number): void {
    const w = this.window(pair);
    if (second <= w.second - 60) return;
    const i = second % 60;
    w.buckets[i] = Math.max(0, w.buckets[i]! - n);
  }

  /** The pair's window, with the buckets of the seconds that passed since it was last used emptied. */
  private window(pair: string) {
    const second = Math.floor(this.now() / 1000);
    let w = this.windows.get(pair);
    if (!w) {
      w = { buckets: new Array<number>(60).fill(0), second };
      this.windows.set(pair, w);
    }
    for (let s = w.second + 1; s <= Math.min(second, w.second + 60); s++) w.buckets[s % 60] = 0;
    w.second = Math.max(w.second, second);
    return w;
  }
}
