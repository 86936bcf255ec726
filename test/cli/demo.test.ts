import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { tmpdir } from 'node:os';
import t from 'tap';
import { EtsiClient } from '../helpers/client.js';
import { runKms, waitFor } from '../helpers/process.js';

// The zero-setup demo as a newcomer runs it (`npm start` runs `kms demo`): no database, HSM or PKI installed.
// It must write demo.json in the documented shape only once it serves keys, and serve them.

t.test('kms demo: demo.json, keys for SAE_A and the same keys for SAE_B, clean exit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kms-demo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const demo = runKms(['demo'], { KMS_DEMO_DIR: dir, KMS_DEMO_PORT: '0', DATABASE_URL: undefined });
  t.teardown(() => demo.child.kill('SIGKILL'));
  const manifest = join(dir, 'demo.json');
  await waitFor(demo, () => existsSync(manifest), 60_000, 'demo.json');
  t.match(demo.stdout, /DEMO MODE/, 'says loudly that it is a demo');
  t.match(demo.stdout, /NOT an HSM/);

  const m = JSON.parse(readFileSync(manifest, 'utf8'));
  t.same(Object.keys(m).sort(), ['ca', 'kmes', 'saes', 'strangers']);
  t.equal(m.kmes.length, 1);
  t.match(m.kmes[0], { id: 'KME_A', url: /^https:\/\/localhost:\d+$/, saes: ['SAE_A', 'SAE_B', 'SAE_C'] });
  t.same(Object.keys(m.saes), ['SAE_A', 'SAE_B', 'SAE_C']);
  t.same(Object.keys(m.strangers), ['SAE_X']);
  for (const f of [m.ca, ...Object.values<{ cert: string; key: string }>({ ...m.saes, ...m.strangers }).flatMap((e) => [e.cert, e.key])]) {
    t.ok(isAbsolute(f) && existsSync(f), `${f} is an absolute path that exists`);
  }

  const url = m.kmes[0].url.replace('localhost', '127.0.0.1');
  const a = new EtsiClient(url, m.ca, m.saes.SAE_A);
  const b = new EtsiClient(url, m.ca, m.saes.SAE_B);
  const x = new EtsiClient(url, m.ca, m.strangers.SAE_X);
  t.teardown(() => [a, b, x].forEach((c) => c.close()));
  const enc = await a.get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(enc.status, 200, 'a key for SAE_A, right away');
  const dec = await b.get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${enc.body.keys[0].key_ID}`);
  t.same(dec.body, enc.body, 'the same key for SAE_B');
  t.equal((await x.get('/api/v1/keys/SAE_B/status')).status, 401, 'the stranger gets nothing');

  demo.child.kill('SIGTERM');
  t.equal(await demo.exited, 0);
  t.notOk(existsSync(manifest), 'demo.json is removed when the demo stops');
});
