import t from 'tap';
import { Barrier } from '../../src/barrier/barrier.js';
import { IntegrityError } from '../../src/hsm/key-wrapper.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';

// The barrier binds every ciphertext to the block it belongs to: a row copied elsewhere does not open.

const barrier = new Barrier(createMockKeyWrapper());
const material = Buffer.from('0123456789abcdef0123456789abcdef');
const id = { linkId: 'L1', seq: '42' };

t.test('seal/open round trip; the envelope is versioned and never contains the material', async (t) => {
  const { wrapped, kekVersion } = await barrier.seal(material, id);
  t.equal(kekVersion, 1);
  t.equal(wrapped[0], 1, 'format version byte');
  t.equal(wrapped.readUInt32BE(1), 1, 'KEK version in the header');
  t.equal(wrapped.length, 1 + 4 + 12 + material.length + 16);
  t.equal(wrapped.indexOf(material), -1);
  t.same(await barrier.open(wrapped, id), material);
});

t.test('moved to another position, another link, or tampered: IntegrityError', async (t) => {
  const { wrapped } = await barrier.seal(material, id);
  await t.rejects(barrier.open(wrapped, { linkId: 'L1', seq: '43' }), IntegrityError);
  await t.rejects(barrier.open(wrapped, { linkId: 'L2', seq: '42' }), IntegrityError);
  const otherVersion = Buffer.from(wrapped);
  otherVersion.writeUInt32BE(2, 1);
  await t.rejects(barrier.open(otherVersion, id), IntegrityError, 'header is authenticated too');
  const flipped = Buffer.from(wrapped);
  flipped[flipped.length - 1]! ^= 1;
  await t.rejects(barrier.open(flipped, id), IntegrityError);
  await t.rejects(barrier.open(Buffer.from([9, 0, 0]), id), IntegrityError, 'unknown format');
});
