import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ensureDemoPki } from '../../src/pki/dev-pki.js';
import { EtsiClient } from '../helpers/client.js';
import { NOT_FOUND, eventually, etsiErrorProblem, sleep } from '../helpers/etsi.js';
import { runKms, waitFor } from '../helpers/process.js';

// `kms sim --config FILE` as an operator runs it: a child process serving the device side of ETSI 014 to the two
// KMEs of a link over mutual TLS (KME_A and KME_B present their KME certificates), stopped by SIGTERM.

const dir = mkdtempSync(join(tmpdir(), 'kms-sim-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pki = await ensureDemoPki(join(dir, 'pki'), { kmeIds: ['KME_A', 'KME_B', 'QKD_DEV'], saeIds: [], strangerIds: ['KME_X'] });

const simConfig = (links: unknown, tls = { cert: 'pki/kme-QKD_DEV.crt', key: 'pki/kme-QKD_DEV.key', ca: 'pki/ca.crt' }) =>
  JSON.stringify({ listen: { host: '127.0.0.1', port: 0 }, tls, links });

t.test('serves enc_keys and dec_keys to both ends of a link over mutual TLS', async (t) => {
  const file = join(dir, 'sim.json');
  writeFileSync(
    file,
    simConfig([
      {
        link_id: 'L1',
        ends: [{ sae_id: 'DEV_A', certificate_cn: 'KME_A' }, { sae_id: 'DEV_B', certificate_cn: 'KME_B' }],
        rate_bits_per_second: 256 * 1000,
        max_key_count: 100,
      },
    ]),
  );
  const sim = runKms(['sim', '--config', file]);
  t.teardown(() => sim.child.kill('SIGKILL'));
  await waitFor(sim, () => /QKD device simulator listening/.test(sim.stdout), 30_000, 'simulator listening');
  const url = JSON.parse(sim.stdout.split('\n').find((l) => l.includes('simulator listening'))!).url as string;

  const client = (name: 'KME_A' | 'KME_B') => new EtsiClient(url, pki.ca, pki.kmes[name]);
  const a = client('KME_A');
  const b = client('KME_B');
  const x = new EtsiClient(url, pki.ca, pki.strangers.KME_X);
  t.teardown(() => (a.close(), b.close(), x.close()));

  const status = await a.get('/api/v1/keys/DEV_B/status');
  t.equal(status.status, 200);
  t.match(status.body, {
    master_SAE_ID: 'DEV_A',
    slave_SAE_ID: 'DEV_B',
    key_size: 256,
    max_key_count: 100,
    max_key_per_request: 128,
    min_key_size: 256,
    max_key_size: 256,
    max_SAE_ID_count: 0,
    status_extension: { qkms_qber: 0.02 },
  });
  t.ok(Number.isInteger(status.body.stored_key_count) && typeof status.body.source_KME_ID === 'string');

  // KME_A takes (enc_keys), KME_B fetches each key once (POST dec_keys), all or nothing
  const enc = await eventually(async () => {
    const r = await a.get('/api/v1/keys/DEV_B/enc_keys?number=2&size=256');
    return r.status === 200 ? r : undefined;
  }, 5_000);
  t.equal(enc?.body.keys.length, 2);
  const ids = enc!.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID }));
  const dec = await b.post('/api/v1/keys/DEV_A/dec_keys', { key_IDs: ids });
  t.same(dec.body, enc!.body, 'the other end gets the same keys');
  const twice = await b.post('/api/v1/keys/DEV_A/dec_keys', { key_IDs: ids });
  t.equal(twice.status, 400);
  t.equal(twice.body.message, NOT_FOUND);

  // the other direction: KME_B takes with an empty POST, KME_A fetches with GET ?key_ID=
  const enc2 = await eventually(async () => {
    const r = await b.post('/api/v1/keys/DEV_A/enc_keys', {});
    return r.status === 200 ? r : undefined;
  }, 5_000);
  const id = enc2!.body.keys[0].key_ID as string;
  t.equal((await a.get('/api/v1/keys/DEV_A/dec_keys?key_ID=' + id)).status, 401, 'not with its own end as master');
  const dec2 = await a.get('/api/v1/keys/DEV_B/dec_keys?key_ID=' + id);
  t.same(dec2.body, enc2!.body);

  const size = await a.get('/api/v1/keys/DEV_B/enc_keys?size=512');
  t.equal(size.status, 400);
  t.match(size.body.message, /size must equal this device's key_size \(256 bits\)/);
  const own = await a.get('/api/v1/keys/DEV_A/enc_keys');
  t.equal(own.status, 401, 'an end cannot ask for keys with itself');
  const stranger = await x.get('/api/v1/keys/DEV_B/status');
  t.equal(stranger.status, 401, 'unknown certificate CN');
  for (const r of [twice, size, own, stranger]) t.equal(etsiErrorProblem(r), undefined, 'ETSI Error body');

  // an outage, triggered by one end: every key call answers 503, then the link comes back
  const outage = await b.post('/sim/v1/links/L1/outage', { seconds: 1.5 });
  t.equal(outage.status, 200);
  const down = await a.get('/api/v1/keys/DEV_B/status');
  t.equal(down.status, 503);
  t.match(down.body.message, /down \(outage\)/);
  t.equal((await b.post('/api/v1/keys/DEV_A/dec_keys', { key_IDs: ids })).status, 503);
  await sleep(1_600);
  t.equal((await a.get('/api/v1/keys/DEV_B/status')).status, 200, 'back after the outage');

  sim.child.kill('SIGTERM');
  t.equal(await sim.exited, 0, 'graceful exit on SIGTERM');
  const output = sim.stdout + sim.stderr;
  for (const k of [...enc!.body.keys, ...enc2!.body.keys]) t.notOk(output.includes(k.key), 'keys never in the log');
});

t.test('a bad config: a message naming the field, exit 1, no stack trace', async (t) => {
  const file = join(dir, 'bad.json');
  writeFileSync(file, simConfig([{ link_id: 'L1', ends: [{ sae_id: 'DEV_A' }, { sae_id: 'DEV_B' }], key_size: 100 }]));
  const bad = runKms(['sim', '--config', file]);
  t.equal(await bad.exited, 1);
  t.match(bad.stderr, /\/links\/0\/key_size: must be a multiple of 8 bits/);
  t.notMatch(bad.stderr, /\n\s+at /);

  writeFileSync(file, simConfig([{ link_id: 'L1', ends: [{ sae_id: 'DEV_A' }, { sae_id: 'DEV_B' }] }], { cert: 'nope.crt', key: 'k', ca: 'c' }));
  const noCert = runKms(['sim', '--config', file]);
  t.equal(await noCert.exited, 1);
  t.match(noCert.stderr, /\/tls\/cert: cannot read .*nope\.crt: ENOENT/);
});
