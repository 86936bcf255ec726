import { EventEmitter } from 'node:events';
import type { CacheTopic, Coordinator, TakeResult } from './coordinator.js';

/**
 * The coordinator of a KME that runs as one process (no `coordination.redis` in its config): messages go to this
 * process's own handlers, counters live in its memory as one-second buckets. Replicas sharing a database without
 * Redis each count their own (the README says so).
 */
export class InProcessCoordinator implements Coordinator {
  readonly kind = 'in-process';
  private readonly events = new EventEmitter();
  private readonly counters = new Map<string, Map<number, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  async publish(topic: CacheTopic): Promise<void> {
    this.events.emit('change', topic);
  }

  onChange(handler: (topic: CacheTopic | 'all') => void): () => void {
    this.events.on('change', handler);
    return () => this.events.off('change', handler);
  }

  async take(name: string, n: number, limit: number, windowS: number): Promise<TakeResult> {
    const second = Math.floor(this.now() / 1000);
    const buckets = this.buckets(name, second, windowS);
    const used = [...buckets.values()].reduce((a, b) => a + b, 0);
    if (used + n > limit) return { ok: false, used, retryAfterS: retryAfter(buckets, second, windowS, used, n, limit) };
    buckets.set(second, (buckets.get(second) ?? 0) + n);
    return { ok: true, second };
  }

  async refund(name: string, n: number, second: number, windowS: number): Promise<void> {
    const buckets = this.buckets(name, Math.floor(this.now() / 1000), windowS);
    const had = buckets.get(second);
    if (had !== undefined) buckets.set(second, Math.max(0, had - n));
  }

  async check(): Promise<void> {}

  async close(): Promise<void> {
    this.events.removeAllListeners();
  }

  /** The counter's buckets, those older than the window dropped. */
  private buckets(name: string, second: number, windowS: number): Map<number, number> {
    let b = this.counters.get(name);
    if (!b) this.counters.set(name, (b = new Map()));
    for (const s of b.keys()) if (s <= second - windowS) b.delete(s);
    return b;
  }
}

/** Seconds until enough of the oldest buckets have left the window for `n` more to fit. */
export function retryAfter(buckets: Map<number, number>, second: number, windowS: number, used: number, n: number, limit: number): number {
  let freed = 0;
  for (let i = 1; i <= windowS; i++) {
    freed += buckets.get(second - windowS + i) ?? 0;
    if (used - freed + n <= limit) return i;
  }
  return windowS;
}
