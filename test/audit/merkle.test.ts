import t from 'tap';
import fc from 'fast-check';
import {
  consistencyProof,
  consistencyProofFromEdge,
  Frontier,
  inclusionProof,
  leafHash,
  rootOf,
  verifyConsistency,
  verifyInclusion,
  type Hash,
} from '../../src/audit/merkle.js';

// The RFC 9162 Merkle tree of the custody log (src/audit/merkle.ts): the reference roots that implementations of
// RFC 6962 publish for their test leaves, then properties over random trees — every proof the tree gives verifies,
// and no proof verifies for another leaf, index, path or root. (A proof alone does not pin the tree's size: the
// signed checkpoint binds size and root together.)

// The eight test leaves of RFC 6962's implementers (Certificate Transparency), and the root of each prefix.
const VECTOR_LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'];
const VECTOR_ROOTS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

const leaves = (n: number): Hash[] => Array.from({ length: n }, (_, i) => leafHash(Buffer.from(`event ${i}`)));
const flip = (h: Hash, bit = 0): Hash => {
  const c = Buffer.from(h);
  c[bit >> 3]! ^= 1 << (bit & 7);
  return c;
};

t.test('the reference roots', async (t) => {
  t.equal(rootOf([]).toString('hex'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'empty tree: SHA-256 of nothing');
  const hashes = VECTOR_LEAVES.map((hex) => leafHash(Buffer.from(hex, 'hex')));
  VECTOR_ROOTS.forEach((root, i) => t.equal(rootOf(hashes.slice(0, i + 1)).toString('hex'), root, `tree of ${i + 1}`));
});

t.test("the frontier gives every prefix's root, also when resumed from its stored bytes", async (t) => {
  const hashes = VECTOR_LEAVES.map((hex) => leafHash(Buffer.from(hex, 'hex')));
  const f = Frontier.empty();
  t.equal(f.root().toString('hex'), rootOf([]).toString('hex'));
  hashes.forEach((h, i) => {
    f.append(h);
    t.equal(f.root().toString('hex'), VECTOR_ROOTS[i], `tree of ${i + 1}`);
  });
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 300 }), (a, b) => {
      const all = leaves(a + b);
      const first = Frontier.empty();
      all.slice(0, a).forEach((h) => first.append(h));
      const resumed = Frontier.of(a, first.toBytes());
      all.slice(a).forEach((h) => resumed.append(h));
      return resumed.size === a + b && resumed.root().equals(rootOf(all));
    }),
    { numRuns: 200 },
  );
  t.throws(() => Frontier.of(3, Buffer.alloc(32)), /2 subtree roots/);
});

t.test("a consistency proof from the old tree's edge and the new leaves is the one from all the leaves", async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 400 }), (m, extra) => {
      const all = leaves(m + extra);
      const edge = Frontier.empty();
      all.slice(0, m).forEach((h) => edge.append(h));
      const fromEdge = consistencyProofFromEdge(edge, all.slice(m));
      const full = consistencyProof(m, all);
      return fromEdge.length === full.length && fromEdge.every((h, i) => h.equals(full[i]!));
    }),
    { numRuns: 300 },
  );
  const edge = Frontier.empty();
  leaves(6).forEach((h) => edge.append(h));
  t.same(edge.subtrees().map((s) => [s.start, s.size]), [[0, 4], [4, 2]], 'the edge of a tree of 6: [0, 4) and [4, 6)');
});

t.test('every inclusion proof of a tree verifies, for that leaf at that index only', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 70 }), fc.nat(), fc.nat(), (n, a, bit) => {
      const l = leaves(n);
      const root = rootOf(l);
      const i = a % n;
      const proof = inclusionProof(i, l);
      if (!verifyInclusion(i, n, l[i]!, proof, root)) return false;
      if (n > 1 && verifyInclusion((i + 1) % n, n, l[i]!, proof, root)) return false; // another index
      if (verifyInclusion(i, n, flip(l[i]!, bit % 256), proof, root)) return false; // another leaf
      if (proof.length > 0 && verifyInclusion(i, n, l[i]!, [flip(proof[0]!, bit % 256), ...proof.slice(1)], root)) return false;
      return !verifyInclusion(i, n, l[i]!, proof, flip(root, bit % 256));
    }),
    { numRuns: 300 },
  );
  t.pass('300 random trees and leaves');
});

t.test('every consistency proof verifies, and a rewritten or truncated history does not', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 70 }), fc.nat(), fc.nat(), (n, a, k) => {
      const l = leaves(n);
      const m = 1 + (a % n);
      const proof = consistencyProof(m, l);
      const [r1, r2] = [rootOf(l.slice(0, m)), rootOf(l)];
      if (!verifyConsistency(m, n, r1, r2, proof)) return false;
      // The same sizes, but one earlier event changed: the old root no longer fits.
      const rewritten = [...l];
      rewritten[k % m] = leafHash(Buffer.from('forged'));
      if (verifyConsistency(m, n, rootOf(rewritten.slice(0, m)), r2, proof)) return false;
      // A second tree whose last event was replaced: this proof was not made for it.
      if (m < n && verifyConsistency(m, n, r1, rootOf([...l.slice(0, n - 1), leafHash(Buffer.from('other'))]), proof)) return false;
      return m === n || !verifyConsistency(m, n, r1, r2, proof.slice(0, -1));
    }),
    { numRuns: 300 },
  );
  t.pass('300 random pairs of sizes');
});

t.test('edge cases', async (t) => {
  const l = leaves(5);
  t.same(consistencyProof(5, l), [], 'a tree is consistent with itself, with no proof');
  t.ok(verifyConsistency(5, 5, rootOf(l), rootOf(l), []));
  t.notOk(verifyConsistency(5, 5, rootOf(l), rootOf(leaves(6)), []), 'equal sizes need equal roots');
  t.notOk(verifyConsistency(6, 5, rootOf(l), rootOf(l), []), 'a tree cannot shrink');
  t.notOk(verifyInclusion(5, 5, l[0]!, inclusionProof(0, l), rootOf(l)), 'an index past the end');
  t.throws(() => inclusionProof(5, l), RangeError);
  t.throws(() => consistencyProof(6, l), RangeError);
  t.ok(verifyInclusion(0, 1, l[0]!, [], l[0]!), 'a tree of one: the leaf is the root');
});
