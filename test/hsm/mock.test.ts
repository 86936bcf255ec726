// hsm-mock must keep the KeyWrapper contract exactly, and its outage switch must behave like a dead HSM.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { HsmUnavailableError, IntegrityError } from '../../src/hsm/key-wrapper.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { keyWrapperConformance, rejectsWith } from '../conformance/key-wrapper.js';

await t.test('conformance', (t) => keyWrapperConformance(t, async () => createMockKeyWrapper()));

await t.test('says loudly that it is not an HSM', async (t) => {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
  const w = createMockKeyWrapper({ log });
  t.equal(w.isHardware, false);
  t.match(w.description, /NOT an HSM/);
  const warning = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => l.level === 40);
  t.match(warning?.msg, /NOT an HSM/, 'a warning is logged on creation');
  await w.close();
});

await t.test('a given KEK is used and must be 32 bytes', async (t) => {
  const kek = Buffer.alloc(32, 9);
  const a = createMockKeyWrapper({ kek });
  const b = createMockKeyWrapper({ kek });
  const other = createMockKeyWrapper();
  const sealed = await a.encrypt(Buffer.from('hello'), Buffer.from('aad'));
  t.equal((await b.decrypt(sealed, Buffer.from('aad'))).toString(), 'hello', 'same KEK decrypts');
  await rejectsWith(t, other.decrypt(sealed, Buffer.from('aad')), IntegrityError, 'a different random KEK does not');
  await a.close();
  t.ok(kek.equals(Buffer.alloc(32, 9)), "close() zeroes its own copy, not the caller's buffer");
  t.throws(() => createMockKeyWrapper({ kek: Buffer.alloc(16) }), /32 bytes/);
  await b.close();
  await other.close();
});

await t.test('simulateOutage makes calls fail with HsmUnavailableError until lifted', async (t) => {
  const w = createMockKeyWrapper();
  t.teardown(() => w.close());
  const aad = Buffer.from('aad');
  const sealed = await w.encrypt(Buffer.from('before'), aad);
  w.simulateOutage(true);
  await rejectsWith(t, w.encrypt(Buffer.from('x'), aad), HsmUnavailableError, 'encrypt while down');
  await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'decrypt while down');
  w.simulateOutage(false);
  t.equal((await w.decrypt(sealed, aad)).toString(), 'before', 'decrypts after the outage');
  const again = await w.encrypt(Buffer.from('after'), aad);
  t.equal((await w.decrypt(again, aad)).toString(), 'after', 'encrypts after the outage');
});
