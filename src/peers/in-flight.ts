/**
 * Positions of a link this KME spent on a message that the peer has not acknowledged yet (one-time pads of a
 * relay in flight). While a position is here, the link's ownership watermark stays below it: otherwise the peer
 * could destroy its copy of the pad (as spent material) before the relay that needs it arrives.
 */
export class InFlight {
  private readonly held = new Map<string, Map<number, bigint>>();
  private nextId = 0;

  /** Holds positions until the returned function is called (call it once the peer answered, or gave up). */
  hold(linkId: string, seqs: readonly string[]): () => void {
    if (seqs.length === 0) return () => undefined;
    const min = seqs.reduce((m, s) => (BigInt(s) < m ? BigInt(s) : m), BigInt(seqs[0]!));
    const id = this.nextId++;
    let link = this.held.get(linkId);
    if (!link) this.held.set(linkId, (link = new Map()));
    link.set(id, min);
    return () => link!.delete(id);
  }

  /** The lowest position held on the link, if any. */
  lowest(linkId: string): bigint | undefined {
    let min: bigint | undefined;
    for (const v of this.held.get(linkId)?.values() ?? []) if (min === undefined || v < min) min = v;
    return min;
  }
}
