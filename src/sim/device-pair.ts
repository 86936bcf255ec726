import { randomBytes, randomUUID } from 'node:crypto';
import { QBER_ABORT } from '../sources/simulator.js';
import type { SimLinkConfig } from './config.js';

/** One end of a pair: 0 or 1, in the order of the config's `ends`. */
export type End = 0 | 1;

export const otherEnd = (end: End): End => (end === 0 ? 1 : 0);

/**
 * The two QKD devices of one simulated link, without HTTP. Keys distil at the configured rate into a shared
 * buffer; an end takes keys with `take` (ETSI enc_keys), and they then wait for the OTHER end, which collects each
 * exactly once with `collect` (ETSI dec_keys). Keys waiting for the other end count towards `max_key_count`, as
 * on real devices: when nobody collects, production pauses rather than growing memory without bound.
 *
 * Production is computed lazily at each call (like src/sources/simulator.ts), so an idle pair costs nothing.
 * Material is OS randomness (`crypto.randomBytes`), drawn when a key is taken. Not a quantum source.
 */
export class DevicePair {
  private ready = 0; // keys distilled and not yet taken
  private credit = 0; // bits distilled but not yet a whole key
  private last: number;
  private readonly started: number;
  /** Outages triggered at run time, as [from, to) in ms (scheduled ones come from the config). */
  private forced: Array<[number, number]> = [];
  /** Keys taken by end i (its enc_keys), by lowercase key_ID, waiting for the other end's dec_keys. */
  private readonly waiting: [Map<string, Buffer>, Map<string, Buffer>] = [new Map(), new Map()];

  constructor(
    readonly link: SimLinkConfig,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
    this.last = this.started;
  }

  /** Keys an enc_keys call could have now. */
  stored(): number {
    this.produce();
    return this.ready;
  }

  /** Takes the link down for `ms` from now (on top of the scheduled outages). */
  outage(ms: number): void {
    const t = this.now();
    this.forced = this.forced.filter(([, to]) => to > this.last); // older ones no longer matter to produce()
    this.forced.push([t, t + ms]);
  }

  isDown(): boolean {
    const t = this.now();
    return this.outages().some(([from, to]) => t >= from && t < to);
  }

  /** `number` new keys for `end`, or undefined (nothing taken) when fewer are ready. The caller wipes them. */
  take(end: End, number: number): Array<{ key_ID: string; key: Buffer }> | undefined {
    this.produce();
    if (number > this.ready) return undefined;
    this.ready -= number;
    const bytes = this.link.key_size / 8;
    return Array.from({ length: number }, () => {
      const key = randomBytes(bytes);
      const key_ID = randomUUID();
      this.waiting[end].set(key_ID, Buffer.from(key));
      return { key_ID, key };
    });
  }

  /**
   * The keys `master` took under these IDs, for the other end; each is handed out once. All or nothing: an
   * unknown, already collected or repeated ID gives undefined and consumes nothing. The caller wipes them.
   */
  collect(master: End, keyIds: string[]): Buffer[] | undefined {
    const ids = keyIds.map((id) => id.toLowerCase());
    const pool = this.waiting[master];
    if (new Set(ids).size !== ids.length || ids.some((id) => !pool.has(id))) return undefined;
    return ids.map((id) => {
      const key = pool.get(id)!;
      pool.delete(id);
      return key;
    });
  }

  close(): void {
    for (const pool of this.waiting) {
      for (const key of pool.values()) key.fill(0);
      pool.clear();
    }
  }

  private produce(): void {
    const t = this.now();
    // No key distils while the link is down (also between two calls) or its error rate is beyond what privacy
    // amplification can fix.
    let upMs = t - this.last;
    for (const [from, to] of this.outages()) upMs -= Math.max(0, Math.min(to, t) - Math.max(from, this.last));
    this.last = t;
    if (this.link.qber > QBER_ABORT) return;
    this.credit += (Math.max(0, upMs) / 1000) * this.link.rate_bits_per_second;
    const room = this.link.max_key_count - this.ready - this.waiting[0].size - this.waiting[1].size;
    const made = Math.max(0, Math.min(Math.floor(this.credit / this.link.key_size), room));
    // A full buffer pauses the pair: what would have distilled meanwhile is not kept for later.
    this.credit = made < room ? this.credit - made * this.link.key_size : 0;
    this.ready += made;
  }

  /** Scheduled and triggered outages as [from, to) in ms. Overlapping ones may count twice: a short pause more. */
  private outages(): Array<[number, number]> {
    const scheduled = this.link.outages.map((o): [number, number] => {
      const from = this.started + o.after_seconds * 1000;
      return [from, from + o.duration_seconds * 1000];
    });
    return [...scheduled, ...this.forced];
  }
}
