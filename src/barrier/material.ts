/** Byte-level helpers for key material in memory. Plaintext: callers wipe what they own when done. */

/** Concatenates a key's blocks and cuts it to exactly `sizeBits` (always a multiple of 8). */
export function assemble(blocks: readonly Buffer[], sizeBits: number): Buffer {
  const key = Buffer.concat(blocks).subarray(0, sizeBits / 8);
  if (key.length * 8 !== sizeBits) throw new Error(`key material short: ${key.length * 8} of ${sizeBits} bits`);
  return key;
}

/** One-time pad: `a` XOR `b` over `a`'s length (`b` must be at least as long). */
export function xor(a: Buffer, b: Buffer): Buffer {
  if (b.length < a.length) throw new Error(`one-time pad too short: ${b.length} of ${a.length} bytes`);
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** Wipes every buffer (plaintext that is no longer needed). */
export function wipe(buffers: Iterable<Buffer | undefined>): void {
  for (const b of buffers) b?.fill(0);
}

/**
 * The plaintext of opened chunks, addressed by link and position. Blocks handed out are views into the chunks:
 * copy what must outlive `wipe()`. The caller wipes when done.
 */
export class OpenedChunks {
  private readonly chunks: Array<{ linkId: string; first: bigint; blocks: number; plain: Buffer }> = [];

  add(chunk: { linkId: string; firstSeq: string; blocks: number }, plain: Buffer): void {
    this.chunks.push({ linkId: chunk.linkId, first: BigInt(chunk.firstSeq), blocks: chunk.blocks, plain });
  }

  /** The material of one block; throws when no opened chunk holds it. */
  block(linkId: string, seq: string): Buffer {
    const at = BigInt(seq);
    const c = this.chunks.find((x) => x.linkId === linkId && at >= x.first && at < x.first + BigInt(x.blocks));
    if (!c) throw new Error(`no opened chunk holds block ${linkId}/${seq}`);
    const size = c.plain.length / c.blocks;
    const offset = Number(at - c.first) * size;
    return c.plain.subarray(offset, offset + size);
  }

  /** The blocks at these positions, in the order given. */
  blocks(linkId: string, seqs: readonly string[]): Buffer[] {
    return seqs.map((s) => this.block(linkId, s));
  }

  wipe(): void {
    for (const c of this.chunks) c.plain.fill(0);
  }
}
