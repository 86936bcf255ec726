/**
 * Positions of a link's key stream as Postgres `int8multirange` literals and back. In memory, positions are decimal
 * strings (Postgres bigints arrive as strings); a key's positions are kept ascending, which is also the order of its
 * material.
 */

/** Positions grouped by link, in the order given (duplicates kept: callers count what they asked for). */
export function positionsByLink(items: Iterable<{ linkId: string; seqs: readonly string[] }>): Map<string, string[]> {
  const byLink = new Map<string, string[]>();
  for (const { linkId, seqs } of items) {
    const list = byLink.get(linkId);
    if (list) list.push(...seqs);
    else byLink.set(linkId, [...seqs]);
  }
  return byLink;
}

/** `{[a,b),[c,d)}` for the given positions (any order; duplicates are the caller's bug and fold away). */
export function toMultirange(seqs: readonly string[]): string {
  return `{${mergedRanges(seqs)
    .map((r) => `[${r.lo},${r.hi})`)
    .join(',')}}`;
}

/** Positions folded into the fewest ascending half-open intervals [lo, hi). */
export function mergedRanges(seqs: readonly string[]): Array<{ lo: bigint; hi: bigint }> {
  const sorted = [...new Set(seqs)].map(BigInt).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const out: Array<{ lo: bigint; hi: bigint }> = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last && last.hi === s) last.hi = s + 1n;
    else out.push({ lo: s, hi: s + 1n });
  }
  return out;
}

/** The positions of a multirange literal as Postgres prints it (`{}`, `{[1,3),[5,6)}`), ascending. */
export function fromMultirange(text: string): string[] {
  const out: string[] = [];
  for (const r of intervalsOf(text)) for (let n = r.lo; n < r.hi; n++) out.push(String(n));
  return out;
}

/** The half-open intervals [lo, hi) of a multirange literal, ascending. */
export function intervalsOf(text: string): Array<{ lo: bigint; hi: bigint }> {
  return [...text.matchAll(/\[(\d+),(\d+)\)/g)].map((m) => ({ lo: BigInt(m[1]!), hi: BigInt(m[2]!) }));
}

/** True when the positions are strictly ascending (a key's material order must be its positions' order). */
export function ascending(seqs: readonly string[]): boolean {
  for (let i = 1; i < seqs.length; i++) if (BigInt(seqs[i]!) <= BigInt(seqs[i - 1]!)) return false;
  return true;
}
