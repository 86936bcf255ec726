/**
 * Where QKD key material comes from: a device driver, or the simulator. The pool's ingester is the only caller.
 *
 * Delivery is at-least-once: `pending` returns the oldest blocks not yet acknowledged, again and again, until
 * `acknowledge` says they are stored. A failed store therefore loses nothing; a block is never stored twice
 * because its position (`seq`) is the primary key of the pool.
 */
export interface KeySource {
  /** For the start-up log. */
  readonly description: string;
  /** The link this material belongs to; both ends of a real link name it the same. */
  readonly linkId: string;
  /** The KME at the other end of the link (this KME's own ID for a loopback link). */
  readonly peerKmeId: string;

  /** Up to `max` blocks ready now, in stream order, without waiting. Empty when nothing is ready. */
  pending(max: number): SourceBlock[];
  /** The first `count` blocks `pending` returned are stored: drop them (and wipe their plaintext). */
  acknowledge(count: number): void;
  /** Stops producing; idempotent. */
  close(): void;
}

export interface SourceBlock {
  /** Position in the link's key stream, as a decimal string (a Postgres bigint). */
  seq: string;
  /** Exactly one block (key_size bits) of material. Plaintext: hand it to the barrier and nowhere else. */
  material: Buffer;
}
