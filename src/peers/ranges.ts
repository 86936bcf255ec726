import type { Range } from '../schemas/peer.js';

/**
 * Positions of a link's key stream travel between KMEs as ranges (first position, count): claims are mostly
 * consecutive, so a key's material or pad is usually one range. Positions are 64-bit, so they are decimal strings
 * on the wire and bigints in arithmetic.
 */

/** Consecutive positions folded into ranges, in the order given. */
export function toRanges(seqs: readonly string[]): Range[] {
  const out: Range[] = [];
  let first: bigint | undefined;
  let count = 0;
  for (const s of seqs) {
    const n = BigInt(s);
    if (first !== undefined && n === first + BigInt(count)) {
      count++;
      continue;
    }
    if (first !== undefined) out.push({ first: String(first), count });
    first = n;
    count = 1;
  }
  if (first !== undefined) out.push({ first: String(first), count });
  return out;
}

/** The positions of ranges, in order; throws past `max` (a peer must not make us expand an absurd message). */
export function fromRanges(ranges: readonly Range[], max: number): string[] {
  const out: string[] = [];
  for (const r of ranges) {
    if (out.length + r.count > max) throw new RangeError(`more than ${max} positions`);
    const first = BigInt(r.first);
    for (let i = 0; i < r.count; i++) out.push(String(first + BigInt(i)));
  }
  return out;
}
