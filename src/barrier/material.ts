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
