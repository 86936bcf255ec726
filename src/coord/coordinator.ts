import type { Redis } from 'ioredis';

/**
 * What the replicas of one KME share besides the database (DESIGN §8): word that a cached table changed, and
 * counters that must add up across replicas. Two implementations pass one conformance suite
 * (test/conformance/coordinator.ts): in-process (a single node; the demo and the default) and Redis.
 *
 * Correctness never rests on the coordinator alone: caches still poll the database (every 500 ms), so a message
 * lost while Redis restarts delays an invalidation by at most one poll; counters fail closed (the caller refuses)
 * when the coordinator cannot answer.
 */
export type CacheTopic = 'principals' | 'policies' | 'pools';

export interface Coordinator {
  readonly kind: 'in-process' | 'redis';
  /**
   * Tells every replica of this KME, this one included, that `topic`'s table changed (call after the commit).
   * Best effort: resolves once sent, or once it failed (logged): the database poll catches what a lost message missed.
   */
  publish(topic: CacheTopic): Promise<void>;
  /**
   * `handler` runs on every replica when a topic changed, and with `'all'` after the coordinator reconnected (messages
   * may have been missed meanwhile). Returns the unsubscribe.
   */
  onChange(handler: (topic: CacheTopic | 'all') => void): () => void;
  /**
   * Adds `n` to the counter `name` in the current one-second bucket if the sum of the last `windowS` seconds' buckets
   * stays within `limit`; all or nothing, atomic across replicas. Rejects when the coordinator cannot answer (the
   * caller fails closed).
   */
  take(name: string, n: number, limit: number, windowS: number): Promise<TakeResult>;
  /** Gives back `n` taken at `second` (a failed request), if that second is still in the window. Best effort. */
  refund(name: string, n: number, second: number, windowS: number): Promise<void>;
  /** The Redis connection for @fastify/rate-limit's store, when there is one. */
  readonly redis?: Redis;
  /** Throws (with an operator's message) when the coordinator does not answer: part of readiness. */
  check(): Promise<void>;
  close(): Promise<void>;
}

export type TakeResult = { ok: true; second: number } | { ok: false; used: number; retryAfterS: number };
