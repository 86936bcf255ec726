import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import {
  decodePacket,
  encodePacket,
  PacketType,
  ViciProtocolError,
  type ViciSectionIn,
} from '../../../src/consumers/strongswan/vici-codec.js';

// The VICI wire format without a charon: known byte layouts, round trips of arbitrary messages, and clear errors
// for what a broken or hostile peer could send. (The real charon is in vici.test.ts.)

/** The body after the 4-byte length prefix, which must count exactly that body. */
const body = (packet: Buffer) => {
  if (packet.readUInt32BE(0) !== packet.length - 4) throw new Error(`length prefix ${packet.readUInt32BE(0)} for a body of ${packet.length - 4}`);
  return packet.subarray(4);
};

t.test('byte layout of a request, as the protocol description gives it', async (t) => {
  const p = encodePacket(PacketType.CMD_REQUEST, 'load-shared', { id: 'x', owners: ['a', 'b'], s: { k: 'v' } });
  t.same(
    [...body(p)],
    [
      0, 11, ...Buffer.from('load-shared'),
      3, 2, ...Buffer.from('id'), 0, 1, ...Buffer.from('x'),
      4, 6, ...Buffer.from('owners'), 5, 0, 1, 97, 5, 0, 1, 98, 6,
      1, 1, ...Buffer.from('s'), 3, 1, ...Buffer.from('k'), 0, 1, ...Buffer.from('v'), 2,
    ],
  );
});

t.test('numbers and booleans are written as swanctl.conf spells them; undefined keys are left out', async (t) => {
  const p = decodePacket(body(encodePacket(PacketType.CMD_REQUEST, 'c', { n: 15000, yes: true, no: false, gone: undefined })));
  t.same(p.message, { n: '15000', yes: 'yes', no: 'no' });
});

t.test('a Buffer value goes on the wire byte for byte (a PPK is binary)', async (t) => {
  const key = Buffer.from([0, 255, 128, 10, 13]);
  const p = encodePacket(PacketType.CMD_REQUEST, 'load-shared', { data: key });
  t.ok(p.includes(Buffer.concat([Buffer.from([0, 5]), key])), 'length then raw bytes');
});

t.test('packet types without a name or message', async (t) => {
  for (const type of [PacketType.CMD_UNKNOWN, PacketType.EVENT_CONFIRM, PacketType.EVENT_UNKNOWN]) {
    t.same([...body(encodePacket(type))], [type]);
    t.same(decodePacket(Buffer.from([type])), { type });
  }
  t.same(decodePacket(body(encodePacket(PacketType.EVENT_REGISTER, 'list-sa'))), { type: PacketType.EVENT_REGISTER, name: 'list-sa' });
});

// Keys that are not integer-like: JavaScript orders those first in an object, which a round trip through an
// object cannot keep (charon's own keys are names like "child-sas", "net-1", "local-ts").
const name = fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }).filter((s) => !/^\d+$/.test(s) && Buffer.byteLength(s) <= 255);
const text = fc.string({ maxLength: 40, unit: 'grapheme' });
const message: fc.Arbitrary<ViciSectionIn> = fc.letrec((tie) => ({
  section: fc.dictionary(name, fc.oneof({ depthSize: 'small' }, text, fc.array(text, { maxLength: 4 }), tie('section')), {
    maxKeys: 5,
    noNullPrototype: true,
  }),
})).section as fc.Arbitrary<ViciSectionIn>;

t.test('round trip: decode(encode(m)) = m for any message, named packet types', async (t) => {
  fc.assert(
    fc.property(fc.constantFrom(PacketType.CMD_REQUEST, PacketType.EVENT), name, message, (type, n, m) => {
      const p = decodePacket(body(encodePacket(type, n, m)));
      return p.type === type && p.name === n && isDeepStrictEqual(p.message, m);
    }),
    { numRuns: 300 },
  );
  t.pass('300 random messages came back unchanged');
});

t.test('round trip: encode(decode(bytes)) = bytes for a response', async (t) => {
  fc.assert(
    fc.property(message, (m) => {
      const bytes = encodePacket(PacketType.CMD_RESPONSE, undefined, m);
      const again = encodePacket(PacketType.CMD_RESPONSE, undefined, decodePacket(bytes.subarray(4)).message);
      return again.equals(bytes);
    }),
    { numRuns: 300 },
  );
  t.pass('300 random responses re-encode to the same bytes');
});

t.test('a key named __proto__ on the wire is an ordinary key', async (t) => {
  const m = decodePacket(body(encodePacket(PacketType.CMD_RESPONSE, undefined, JSON.parse('{"__proto__": {"polluted": "yes"}}'))));
  t.equal(Object.getPrototypeOf(m.message), Object.prototype);
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was touched');
  t.same(Object.keys(m.message!), ['__proto__']);
});

t.test('too long a name or value is refused, naming the key', async (t) => {
  t.throws(() => encodePacket(PacketType.CMD_REQUEST, 'c', { ['k'.repeat(256)]: 'v' }), /name longer than 255 bytes/);
  t.throws(() => encodePacket(PacketType.CMD_REQUEST, 'c', { conn: { big: 'x'.repeat(65536) } }), { message: /^conn\.big: value longer than 65535 bytes/ });
  t.throws(() => encodePacket(PacketType.CMD_REQUEST, 'n'.repeat(256)), /packet name: name longer than 255/);
});

t.test('malformed input is a ViciProtocolError, never a crash or a silent partial message', async (t) => {
  const good = body(encodePacket(PacketType.CMD_RESPONSE, undefined, { a: 'b', l: ['x'], s: { k: 'v' } }));
  for (let cut = 1; cut < good.length; cut++) {
    const partial = good.subarray(0, cut);
    try {
      decodePacket(partial);
      // a cut between two elements leaves a shorter message that is still valid
    } catch (err) {
      t.type(err, ViciProtocolError, `cut at ${cut}`);
    }
  }
  const bad: Array<[number[], RegExp]> = [
    [[9], /unknown packet type 9/],
    [[1, 2], /SECTION_END without a section/],
    [[1, 5, 0, 0], /LIST_ITEM outside a list/],
    [[1, 6], /LIST_END without a list/],
    [[1, 4, 1, 108, 3], /element 3 inside a list/],
    [[1, 1, 1, 115], /ends inside a section or list/],
    [[1, 42], /unknown element type 42/],
    [[5, 1], /unexpected bytes/],
    [[1, 3, 1, 107, 0, 9, 1], /truncated in k value/],
  ];
  for (const [bytes, re] of bad) t.throws(() => decodePacket(Buffer.from(bytes)), re, re.source);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodePacket(Buffer.from(bytes));
      } catch (err) {
        if (!(err instanceof ViciProtocolError)) throw err;
      }
    }),
    { numRuns: 500 },
  );
  t.pass('500 random byte strings decode or fail with a ViciProtocolError');
});
