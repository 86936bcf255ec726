import t from 'tap';
import { Barrier, IntegrityFailures } from '../../src/barrier/barrier.js';
import { IntegrityError } from '../../src/hsm/key-wrapper.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';

// The barrier binds every ciphertext to what it belongs to (a chunk of a link, or a relayed key): a row copied
// elsewhere does not open.

const barrier = new Barrier(createMockKeyWrapper());
const material = Buffer.from('0123456789abcdef0123456789abcdef');
const chunk = Buffer.concat([material, Buffer.from('fedcba9876543210fedcba9876543210'), material]);
const chunkId = { linkId: 'L1', firstSeq: '42', blocks: 3 };
const keyId = { keyId: '6f1c2a3b-0000-4000-8000-000000000001' };

t.test('a chunk: seal/open round trip; versioned envelope, the data key wrapped by the KEK, no material in sight', async (t) => {
  const { wrapped, kekVersion } = await barrier.sealChunk(chunk, chunkId);
  t.equal(kekVersion, 1);
  t.equal(wrapped[0], 2, 'format byte of a chunk envelope');
  t.equal(wrapped.readUInt32BE(1), 1, 'KEK version in the header');
  t.equal(wrapped.length, 1 + 4 + 12 + 32 + 16 + 12 + chunk.length + 16, 'header, wrapped data key, IV, data, tag');
  t.equal(wrapped.indexOf(material), -1);
  t.same(await barrier.open(wrapped, chunkId), chunk);
  const again = await barrier.sealChunk(chunk, chunkId);
  t.not(again.wrapped.subarray(5).toString('hex'), wrapped.subarray(5).toString('hex'), 'a fresh data key and IVs every time');
});

t.test('a chunk moved to another position, length or link, or tampered with in either layer: IntegrityError', async (t) => {
  const { wrapped } = await barrier.sealChunk(chunk, chunkId);
  await t.rejects(barrier.open(wrapped, { ...chunkId, firstSeq: '43' }), IntegrityError);
  await t.rejects(barrier.open(wrapped, { ...chunkId, blocks: 2 }), IntegrityError);
  await t.rejects(barrier.open(wrapped, { ...chunkId, linkId: 'L2' }), IntegrityError);
  const otherVersion = Buffer.from(wrapped);
  otherVersion.writeUInt32BE(2, 1);
  await t.rejects(barrier.open(otherVersion, chunkId), IntegrityError, 'header is authenticated too');
  const dataFlipped = Buffer.from(wrapped);
  dataFlipped[dataFlipped.length - 1]! ^= 1;
  await t.rejects(barrier.open(dataFlipped, chunkId), IntegrityError, 'data tag');
  const dekFlipped = Buffer.from(wrapped);
  dekFlipped[20]! ^= 1;
  await t.rejects(barrier.open(dekFlipped, chunkId), IntegrityError, 'wrapped data key');
  const other = await barrier.sealChunk(chunk, chunkId);
  const spliced = Buffer.concat([wrapped.subarray(0, 65), other.wrapped.subarray(65)]);
  await t.rejects(barrier.open(spliced, chunkId), IntegrityError, "one chunk's data under another's data key");
  await t.rejects(barrier.open(Buffer.from([9, 0, 0]), chunkId), IntegrityError, 'unknown format');
});

t.test("a relayed key's own envelope: round trip, bound to its key_ID", async (t) => {
  const { wrapped } = await barrier.seal(material, keyId);
  t.equal(wrapped[0], 1, 'format byte of a key envelope');
  t.equal(wrapped.length, 1 + 4 + 12 + material.length + 16);
  t.equal(wrapped.indexOf(material), -1);
  t.same(await barrier.open(wrapped, keyId), material);
  await t.rejects(barrier.open(wrapped, { keyId: '6f1c2a3b-0000-4000-8000-000000000002' }), IntegrityError);
  await t.rejects(barrier.open(wrapped, chunkId), IntegrityError, 'a key envelope is not a chunk');
});

t.test('openChunks addresses blocks by position and names exactly the chunks that fail', async (t) => {
  const a = await barrier.sealChunk(chunk, chunkId);
  const bId = { linkId: 'L1', firstSeq: '45', blocks: 1 };
  const b = await barrier.sealChunk(material, bId);
  const opened = await barrier.openChunks([
    { sealed: a.wrapped, id: chunkId },
    { sealed: b.wrapped, id: bId },
  ]);
  t.same(Buffer.concat(opened.blocks('L1', ['43', '45'])), Buffer.concat([chunk.subarray(32, 64), material]));
  t.throws(() => opened.block('L1', '46'), /no opened chunk/);
  opened.wipe();
  t.same(opened.block('L1', '42'), Buffer.alloc(32), 'wipe zeroes the plaintext');
  const bad = Buffer.from(b.wrapped);
  bad[bad.length - 1]! ^= 1;
  const err = await barrier.openChunks([{ sealed: a.wrapped, id: chunkId }, { sealed: bad, id: bId }]).catch((e: unknown) => e);
  t.ok(err instanceof IntegrityFailures);
  t.same((err as IntegrityFailures).ids, [bId]);
  t.equal((err as IntegrityFailures).total, 2);
});
