import { createHash, hash } from 'node:crypto';

/**
 * The Merkle tree of RFC 9162 §2.1 (Certificate Transparency 2.0; the same tree as RFC 6962): the hash the custody
 * log's checkpoints sign, and the proofs an auditor checks against them. SHA-256; a leaf hash is
 * SHA-256(0x00 || leaf), an interior node SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at the
 * largest power of two below n. Pure functions over leaf hashes, so the sealer, the auditor API and the offline
 * verifier compute the very same thing. No library on npm builds the trees and both kinds of proof, so it is
 * written here, small, and checked against the reference vectors of RFC 6962's implementers (test/audit/merkle.test.ts).
 */

export type Hash = Buffer;

const sha256 = (...parts: Buffer[]): Hash => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

const LEAF = Buffer.from([0x00]);
const NODE = Buffer.from([0x01]);

/** MTH of one entry: the hash a leaf enters the tree with. */
export const leafHash = (entry: Buffer): Hash => sha256(LEAF, entry);

/**
 * The leaf hash of a text entry, UTF-8 encoded: the same as leafHash(Buffer.from(text, 'utf8')). One-shot hashing of
 * a string skips the Hash object and the intermediate Buffer: once most of the cost of verifying a long log.
 */
export const textLeafHash = (text: string): Hash => hash('sha256', `\x00${text}`, 'buffer');

/**
 * The same, in lower-case hex. A long log's verification is mostly hashing, and on Node 20 a digest returned as a
 * hex string costs about half of one returned as a Buffer (each Buffer allocates its own backing store), so the
 * verifier's hot path keeps hashes as hex (Frontier.appendHex).
 */
export const textLeafHex = (text: string): string => hash('sha256', `\x00${text}`, 'hex');

// Interior nodes are hashed from one reused 65-byte buffer (0x01 || left || right): the same bytes as sha256(NODE,
// left, right), without a Hash object and a concatenation per node. Safe because hashing here is synchronous.
const node = Buffer.alloc(65);
node[0] = 0x01;
export const nodeHash = (left: Hash, right: Hash): Hash => {
  if (left.length !== 32 || right.length !== 32) return sha256(NODE, left, right);
  left.copy(node, 1);
  right.copy(node, 33);
  return hash('sha256', node, 'buffer');
};

/** nodeHash of two hashes given in hex (64 hex digits each, as Frontier holds them), in hex. */
const nodeHex = (left: string, right: string): string => {
  node.write(left, 1, 'hex');
  node.write(right, 33, 'hex');
  return hash('sha256', node, 'hex');
};

/** The largest power of two strictly below n (n ≥ 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH(D[n]): the root of the tree over these leaf hashes (SHA-256 of nothing for an empty tree). */
export function rootOf(leaves: readonly Hash[]): Hash {
  if (leaves.length === 0) return sha256();
  if (leaves.length === 1) return leaves[0]!;
  const k = split(leaves.length);
  return nodeHash(rootOf(leaves.slice(0, k)), rootOf(leaves.slice(k)));
}

/** PATH(m, D[n]): the audit path proving that leaf `index` is in the tree over `leaves`. */
export function inclusionProof(index: number, leaves: readonly Hash[]): Hash[] {
  if (!Number.isInteger(index) || index < 0 || index >= leaves.length) throw new RangeError(`leaf ${index} is not in a tree of ${leaves.length}`);
  if (leaves.length === 1) return [];
  const k = split(leaves.length);
  return index < k
    ? [...inclusionProof(index, leaves.slice(0, k)), rootOf(leaves.slice(k))]
    : [...inclusionProof(index - k, leaves.slice(k)), rootOf(leaves.slice(0, k))];
}

/** PROOF(m, D[n]): proves that the tree of the first `m` leaves is a prefix of the tree over `leaves`. */
export function consistencyProof(m: number, leaves: readonly Hash[]): Hash[] {
  if (!Number.isInteger(m) || m < 0 || m > leaves.length) throw new RangeError(`a tree of ${m} cannot precede a tree of ${leaves.length}`);
  if (m === 0 || m === leaves.length) return [];
  return subProof(m, leaves, true);
}

function subProof(m: number, leaves: readonly Hash[], whole: boolean): Hash[] {
  const n = leaves.length;
  if (m === n) return whole ? [] : [rootOf(leaves)];
  const k = split(n);
  return m <= k
    ? [...subProof(m, leaves.slice(0, k), whole), rootOf(leaves.slice(k))]
    : [...subProof(m - k, leaves.slice(k), false), rootOf(leaves.slice(0, k))];
}

/**
 * PROOF(m, D[n]) without the first m leaves: from the right edge of the tree of m (`edge`, its perfect subtrees) and
 * the leaves after it. RFC 9162's recursion takes from the old tree only whole subtrees of that edge, or a fold of
 * its last ones, so nothing before m is needed: the cost is that of the new leaves. This is what a KME pays to ask a
 * witness to cosign its latest checkpoint, every few seconds, however long its log has grown.
 */
export function consistencyProofFromEdge(edge: Frontier, newLeaves: readonly Hash[]): Hash[] {
  const m = edge.size;
  const n = m + newLeaves.length;
  if (m === 0 || m === n) return [];
  const subtrees = edge.subtrees();
  const mth = (a: number, b: number): Hash => {
    if (a >= m) return rootOf(newLeaves.slice(a - m, b - m));
    const run = subtrees.filter((t) => t.start >= a && t.start + t.size <= b);
    const covered = run.reduce((sum, t) => sum + t.size, 0);
    if (b > m || run[0]?.start !== a || covered !== b - a) throw new Error(`no proof node [${a}, ${b}) on the edge of a tree of ${m}`);
    return run.reduceRight<Hash | undefined>((r, t) => (r ? nodeHash(t.hash, r) : t.hash), undefined)!;
  };
  // subProof of RFC 9162 over the range [a, a + len) of the new tree, m counted from a.
  const sub = (mm: number, a: number, len: number, whole: boolean): Hash[] => {
    if (mm === len) return whole ? [] : [mth(a, a + len)];
    const k = split(len);
    return mm <= k ? [...sub(mm, a, k, whole), mth(a + k, a + len)] : [...sub(mm - k, a + k, len - k, false), mth(a, a + k)];
  };
  return sub(m, 0, n, true);
}

/** RFC 9162 §2.1.3.2: does `proof` place `leaf` at `index` of a tree of `size` whose root is `root`? */
export function verifyInclusion(index: number, size: number, leaf: Hash, proof: readonly Hash[], root: Hash): boolean {
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size) return false;
  const walk = { fn: index, sn: size - 1 };
  let r = leaf;
  for (const p of proof) {
    if (walk.sn === 0) return false;
    if (walk.fn % 2 === 1 || walk.fn === walk.sn) {
      r = nodeHash(p, r);
      climbToRightChild(walk);
    } else {
      r = nodeHash(r, p);
    }
    shift(walk);
  }
  return walk.sn === 0 && r.equals(root);
}

/** RFC 9162 §2.1.4.2: does `proof` show the tree (`size1`, `root1`) to be a prefix of the tree (`size2`, `root2`)? */
export function verifyConsistency(size1: number, size2: number, root1: Hash, root2: Hash, proof: readonly Hash[]): boolean {
  if (!Number.isInteger(size1) || !Number.isInteger(size2) || size1 < 0 || size1 > size2) return false;
  if (size1 === size2) return proof.length === 0 && root1.equals(root2);
  if (size1 === 0) return proof.length === 0; // the empty tree precedes every tree
  if (proof.length === 0) return false;
  // A first tree that is a complete subtree is its own first node of the path.
  const path = isPowerOfTwo(size1) ? [root1, ...proof] : [...proof];
  const walk = { fn: size1 - 1, sn: size2 - 1 };
  while (walk.fn % 2 === 1) shift(walk);
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (walk.sn === 0) return false;
    if (walk.fn % 2 === 1 || walk.fn === walk.sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      climbToRightChild(walk);
    } else {
      sr = nodeHash(sr, c);
    }
    shift(walk);
  }
  return walk.sn === 0 && fr.equals(root1) && sr.equals(root2);
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** The walk of both verifications: `fn` the node's index at the current level, `sn` the last index there. */
interface Walk {
  fn: number;
  sn: number;
}

/** Up one level. */
function shift(w: Walk): void {
  w.fn = Math.floor(w.fn / 2);
  w.sn = Math.floor(w.sn / 2);
}

/** A node that was last at its level, with no sibling to its right: up until it is a right child (or index 0). */
function climbToRightChild(w: Walk): void {
  if (w.fn % 2 === 1) return;
  while (w.fn % 2 === 0 && w.fn !== 0) shift(w);
}

/**
 * The right edge of a growing tree: the roots of its perfect subtrees, largest first, one per set bit of its size.
 * It is all that appending leaves and computing each new root needs, so the sealer keeps it between seals instead of
 * the leaves, and a verifier can start from the last checkpoint of an archived (pruned) part of the log.
 */
export class Frontier {
  /** The subtree roots, in hex: see textLeafHex (converted to Buffers only at the edges of this class). */
  private constructor(
    private count: number,
    private readonly hashes: string[],
  ) {}

  static empty(): Frontier {
    return new Frontier(0, []);
  }

  /** The edge of a tree of `size` leaves, as `bytes` (from `toBytes`) stored it; throws if they do not fit the size. */
  static of(size: number, bytes: Buffer): Frontier {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`tree size ${size} is not a non-negative integer`);
    const subtrees = size.toString(2).replace(/0/g, '').length;
    if (bytes.length !== 32 * subtrees) throw new RangeError(`a tree of ${size} leaves has ${subtrees} subtree roots on its edge, not ${bytes.length / 32}`);
    return new Frontier(size, Array.from({ length: subtrees }, (_, i) => bytes.toString('hex', 32 * i, 32 * i + 32)));
  }

  get size(): number {
    return this.count;
  }

  append(leaf: Hash): void {
    if (leaf.length !== 32) throw new RangeError(`a leaf hash is 32 bytes, not ${leaf.length}`);
    this.appendHex(leaf.toString('hex'));
  }

  /** Appends a leaf hash given as 64 lower-case hex digits (textLeafHex): the verifier's way, see there. */
  appendHex(leaf: string): void {
    // Each trailing 1 bit of the old size is a subtree as large as what is being carried: they merge.
    let carried = leaf;
    for (let s = this.count; s % 2 === 1; s = Math.floor(s / 2)) carried = nodeHex(this.hashes.pop()!, carried);
    this.hashes.push(carried);
    this.count++;
  }

  root(): Hash {
    if (this.hashes.length === 0) return sha256();
    let r = this.hashes[this.hashes.length - 1]!;
    for (let i = this.hashes.length - 2; i >= 0; i--) r = nodeHex(this.hashes[i]!, r);
    return Buffer.from(r, 'hex');
  }

  toBytes(): Buffer {
    return Buffer.from(this.hashes.join(''), 'hex');
  }

  /** The perfect subtrees of the edge, largest (leftmost) first, with where each starts and how many leaves it holds. */
  subtrees(): Array<{ start: number; size: number; hash: Hash }> {
    const out: Array<{ start: number; size: number; hash: Hash }> = [];
    let start = 0;
    for (let bit = 2 ** Math.floor(Math.log2(Math.max(this.count, 1))); bit >= 1; bit /= 2) {
      if (Math.floor(this.count / bit) % 2 === 0) continue;
      out.push({ start, size: bit, hash: Buffer.from(this.hashes[out.length]!, 'hex') });
      start += bit;
    }
    return out;
  }

  copy(): Frontier {
    return new Frontier(this.count, [...this.hashes]);
  }
}
