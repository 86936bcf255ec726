/**
 * Who owns new material on a paired link. The primary decides when it stores a batch, and announces the split with
 * the material: positions [first, first + split) of each device key are the primary's, the rest the secondary's.
 * Only the owner hands a position out, so masters at both ends never receive the same material and never have to
 * ask each other before answering. The split follows both ends' room, so material goes where the pool is emptier
 * (demand is rarely symmetric: most traffic may flow one way).
 */

/** How many of `blocks` new blocks the primary keeps, given its own room and the peer's (both in blocks). */
export function splitOwnership(blocks: number, ownRoom: number, peerRoom: number): number {
  const own = Math.max(0, ownRoom);
  const peer = Math.max(0, peerRoom);
  if (own + peer <= 0) return 0;
  const share = Math.round((blocks * own) / (own + peer));
  // Never more than either end has room for.
  return Math.min(own, Math.max(share, blocks - peer, 0), blocks);
}

/**
 * The peer's room as the primary last heard it (announcement acks and link sync), less what was assigned to it and
 * not confirmed since: when the peer goes quiet, the primary stops filling the peer's share instead of guessing.
 */
export class PeerRoom {
  private room: number | undefined;
  private pending = 0;

  /** A fresh figure from the peer (it does not include blocks assigned to it but not announced yet). */
  report(blocks: number): void {
    this.room = Math.max(0, blocks);
  }

  /** Blocks just assigned to the peer, not yet stored there. */
  assign(blocks: number): void {
    this.pending += blocks;
  }

  /** Assigned blocks the peer stored (its room figure now includes them) or that were given up. */
  settled(blocks: number): void {
    this.pending = Math.max(0, this.pending - blocks);
  }

  /**
   * What the peer can still take. Before it ever said, assume it has as much room as this end (`ownRoom`): both
   * ends usually run the same pool size, and material a silent peer was assigned just waits for its confirmation.
   */
  available(ownRoom: number): number {
    return Math.max(0, (this.room ?? ownRoom) - this.pending);
  }
}
