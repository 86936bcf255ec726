import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Etsi014SourceConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { ensureDemoPki } from '../../src/pki/dev-pki.js';
import { parseSimConfig } from '../../src/sim/config.js';
import { startDeviceSimulator } from '../../src/sim/device-server.js';
import { createEtsi014Source } from '../../src/sources/etsi014.js';
import { DeviceKeysNotReadyError, DeviceUnavailableError, type DeviceKey, type LinkSource } from '../../src/sources/link-source.js';
import type { SourceContext } from '../../src/sources/registry.js';
import { sleep } from '../helpers/etsi.js';
import { findLeaks } from '../helpers/leak-scan.js';

// Two KMEs' etsi014 drivers (primary KME_A, secondary KME_B) against the device simulator of `kms sim`, in
// process, over real mutual-TLS sockets; plus a device that misbehaves and one that never answers.

const dir = mkdtempSync(join(tmpdir(), 'kms-etsi014-source-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pki = await ensureDemoPki(join(dir, 'pki'), { kmeIds: ['KME_A', 'KME_B', 'QKD_DEV'], saeIds: [], strangerIds: [] });

let logText = '';
const log = createLogger({ level: 'debug' }, { write: (line: string) => void (logText += line) });
const seen: Buffer[] = []; // copies of every key handed out, for the log leak scan

const sim = await startDeviceSimulator(
  parseSimConfig({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.kmes.QKD_DEV!.cert, key: pki.kmes.QKD_DEV!.key, ca: pki.ca },
    links: [
      // max_key_per_request 8: the drivers must chunk by the device's limit
      { link_id: 'L1', ends: [{ sae_id: 'DEV_A', certificate_cn: 'KME_A' }, { sae_id: 'DEV_B', certificate_cn: 'KME_B' }], rate_bits_per_second: 256 * 5000, max_key_count: 500, max_key_per_request: 8 },
      // 128-bit keys, where the drivers ask for 256-bit blocks
      { link_id: 'L2', ends: [{ sae_id: 'DEV_C', certificate_cn: 'KME_A' }, { sae_id: 'DEV_D', certificate_cn: 'KME_B' }], key_size: 128 },
      // next to no key: enc_keys answers 503 while the device is up
      { link_id: 'L3', ends: [{ sae_id: 'DEV_E', certificate_cn: 'KME_A' }, { sae_id: 'DEV_F', certificate_cn: 'KME_B' }], rate_bits_per_second: 0.001 },
    ],
  }),
  log,
);
t.teardown(() => sim.close());

const ctx = (kmeId: string, role: SourceContext['role'], linkId = 'L1'): SourceContext => ({
  kmeId,
  linkId,
  blockBits: 256,
  role,
  startSeq: async () => '0',
  log,
});
const sourceConfig = (kme: 'KME_A' | 'KME_B', peer: string, extra: Partial<Etsi014SourceConfig> = {}): Etsi014SourceConfig => ({
  type: 'etsi014',
  url: sim.url,
  ca: pki.ca,
  cert: pki.kmes[kme]!.cert,
  key: pki.kmes[kme]!.key,
  peer_sae_id: peer,
  keys_per_request: 64,
  timeout_ms: 2_000,
  ...extra,
});

const primary = await createEtsi014Source(sourceConfig('KME_A', 'DEV_B'), ctx('KME_A', 'primary'));
const secondary = await createEtsi014Source(sourceConfig('KME_B', 'DEV_A'), ctx('KME_B', 'secondary'));
t.teardown(() => Promise.all([primary.close(), secondary.close()]));

/** Takes until `want` keys arrived (the device distils at its rate). */
async function takeKeys(source: LinkSource, want: number): Promise<DeviceKey[]> {
  const got: DeviceKey[] = [];
  for (let i = 0; got.length < want && i < 200; i++) {
    const keys = await source.take(want - got.length);
    got.push(...keys);
    if (keys.length === 0) await sleep(20);
  }
  seen.push(...got.map((k) => Buffer.from(k.material)));
  return got;
}

const errorOf = async (p: Promise<unknown>): Promise<Error> => {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
};

t.test('the secondary fetches exactly the primary material by its refs', async (t) => {
  const keys = await takeKeys(primary, 20);
  t.equal(keys.length, 20);
  t.ok(keys.every((k) => k.blocks === 1 && k.material.length === 32), 'one 256-bit block per device key');
  t.equal(new Set(keys.map((k) => k.ref)).size, 20, 'distinct key_IDs');
  const small = await primary.take(3);
  t.ok(small.length <= 3, 'never more than maxBlocks');
  seen.push(...small.map((k) => Buffer.from(k.material)));

  const fetched = await secondary.fetch(keys.map(({ ref, blocks }) => ({ ref, blocks }))); // 3 device calls of ≤ 8
  t.same(fetched.map((b) => b.toString('hex')), keys.map((k) => k.material.toString('hex')), 'identical material, in order');
  t.same(primary.figures(), { up: true, outages: 0 });
  t.equal(primary.figures().qber, undefined, 'ETSI 014 reports no QBER');
  await secondary.release(keys.map((k) => k.ref));
});

t.test('fetch: unknown refs are not ready; a held key survives a retry, even during an outage, until release', async (t) => {
  const unknown = '00000000-0000-4000-8000-000000000000';
  const notReady = await errorOf(secondary.fetch([{ ref: unknown, blocks: 1 }]));
  t.type(notReady, DeviceKeysNotReadyError);
  t.same((notReady as DeviceKeysNotReadyError).refs, [unknown]);

  const refused = await errorOf(secondary.fetch([{ ref: unknown, blocks: 2 }]));
  t.notOk(refused instanceof DeviceKeysNotReadyError, 'a 2-block announcement is not "not ready"');
  t.match(refused.message, /does not match this driver/);

  // one unknown ref among known ones: exactly it is not ready, and the known ones are fetched and held
  const mixed = await takeKeys(primary, 5);
  const withUnknown = [...mixed.slice(0, 2), { ref: unknown, blocks: 1 }, ...mixed.slice(2)].map(({ ref, blocks }) => ({ ref, blocks }));
  const partial = await errorOf(secondary.fetch(withUnknown));
  t.type(partial, DeviceKeysNotReadyError);
  t.same((partial as DeviceKeysNotReadyError).refs, [unknown], 'only the unknown ref');
  const rest = await secondary.fetch(mixed.map(({ ref, blocks }) => ({ ref, blocks })));
  t.same(rest.map((b) => b.toString('hex')), mixed.map((k) => k.material.toString('hex')), 'the others were kept');
  await secondary.release(mixed.map((k) => k.ref));

  const keys = await takeKeys(primary, 4);
  const refs = keys.map(({ ref, blocks }) => ({ ref, blocks }));
  const first = await secondary.fetch(refs);
  first[0]!.fill(0); // the caller wipes what it was given: the held copy must not change
  sim.outage('L1', 1_500);
  const again = await secondary.fetch(refs);
  t.same(again.map((b) => b.toString('hex')), keys.map((k) => k.material.toString('hex')), 'same bytes, no device call (it is down)');

  await secondary.release(refs.map((r) => r.ref));
  await secondary.release(refs.map((r) => r.ref)); // idempotent
  t.type(await errorOf(secondary.fetch(refs)), DeviceUnavailableError, 'after release the device is asked again');
  await sleep(1_600);
  const gone = await errorOf(secondary.fetch(refs));
  t.type(gone, DeviceKeysNotReadyError, 'and the device handed those keys out already');
});

t.test('an outage: take throws DeviceUnavailableError, and works again after it', async (t) => {
  await takeKeys(primary, 1);
  sim.outage('L1', 600);
  const err = await errorOf(primary.take(5));
  t.type(err, DeviceUnavailableError);
  t.match(err.message, /503/);
  const down = primary.figures();
  t.equal(down.up, false);
  t.ok(down.lastOutage?.at, 'when it went down');
  t.equal(down.outages, 1, 'the outage is counted');
  await sleep(700);
  const keys = await takeKeys(primary, 2);
  t.equal(keys.length, 2, 'keys again after the outage');
  const up = primary.figures();
  t.equal(up.up, true);
  t.ok((up.lastOutage?.durationMs ?? -1) >= 0, 'how long it was down');
  t.equal(up.outages, 1, 'once');
});

t.test('no key yet (503 while the device is up) gives []', async (t) => {
  const slow = await createEtsi014Source(sourceConfig('KME_A', 'DEV_F'), ctx('KME_A', 'primary', 'L3'));
  t.teardown(() => slow.close());
  t.same(await slow.take(5), []);
  t.same(await slow.take(5), []);
  t.equal(slow.figures().up, true);
});

t.test('a device that serves another key size is refused with its reason', async (t) => {
  const other = await createEtsi014Source(sourceConfig('KME_A', 'DEV_D'), ctx('KME_A', 'primary', 'L2'));
  t.teardown(() => other.close());
  const err = await errorOf(other.take(5));
  t.type(err, DeviceUnavailableError);
  t.match(err.message, /400.*size must equal this device's key_size \(128 bits\)/);
});

t.test('a misbehaving device (keys of the wrong length) is dropped, never logged', async (t) => {
  const wrong = Buffer.alloc(16, 0xa5); // 128 bits for a 256-bit request
  let encCalls = 0;
  const server = createHttpsServer({ cert: readFileSync(pki.kmes.QKD_DEV!.cert), key: readFileSync(pki.kmes.QKD_DEV!.key) }, (req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url?.includes('/status')) return res.end(JSON.stringify({ max_key_per_request: 4, max_key_count: 100 }));
    encCalls++;
    res.end(JSON.stringify({ keys: [{ key_ID: 'c0ffee00-0000-4000-8000-000000000001', key: wrong.toString('base64') }] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const bad = await createEtsi014Source({ ...sourceConfig('KME_A', 'DEV_B'), url: `https://127.0.0.1:${port}` }, ctx('KME_A', 'primary', 'LX'));
  t.teardown(() => bad.close());
  const err = await errorOf(bad.take(10));
  t.type(err, DeviceUnavailableError);
  t.match(err.message, /misbehaves/);
  t.notMatch(err.message, wrong.toString('base64'));
  t.equal(encCalls, 1);
  t.match(logText, /QKD device misbehaves/);
  t.equal(findLeaks([wrong], { texts: [{ where: 'log', text: logText }], bytes: [] }).length, 0, 'not in the log');
});

t.test('unreachable and silent devices are unavailable; unreadable TLS files are config errors', async (t) => {
  const refused = await createEtsi014Source({ ...sourceConfig('KME_A', 'DEV_B'), url: 'https://127.0.0.1:1' }, ctx('KME_A', 'primary', 'LR'));
  t.teardown(() => refused.close());
  const e1 = await errorOf(refused.take(1));
  t.type(e1, DeviceUnavailableError);
  t.match(e1.message, /unreachable.*ECONNREFUSED/);

  const sockets: Socket[] = [];
  const silent = createTcpServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => (sockets.forEach((s) => s.destroy()), new Promise<void>((r) => silent.close(() => r()))));
  const port = (silent.address() as { port: number }).port;
  const slow = await createEtsi014Source({ ...sourceConfig('KME_A', 'DEV_B'), url: `https://127.0.0.1:${port}`, timeout_ms: 200 }, ctx('KME_A', 'primary', 'LS'));
  t.teardown(() => slow.close());
  const e2 = await errorOf(slow.take(1));
  t.type(e2, DeviceUnavailableError);
  t.match(e2.message, /no answer within 200 ms/);

  const e3 = await errorOf(createEtsi014Source({ ...sourceConfig('KME_A', 'DEV_B'), cert: join(dir, 'missing.crt') }, ctx('KME_A', 'primary')));
  t.equal(e3.name, 'ConfigError');
  t.match(e3.message, /^\/links\/L1\/source\/cert: cannot read .*missing\.crt: ENOENT/);
});

t.test('no key material in the log', async (t) => {
  t.ok(seen.length > 20);
  t.same(findLeaks(seen, { texts: [{ where: 'log', text: logText }], bytes: [] }), []);
});
