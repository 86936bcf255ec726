import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { tmpdir } from 'node:os';
import t from 'tap';
import { EtsiClient } from '../helpers/client.js';
import { runKms, waitFor } from '../helpers/process.js';

// The zero-setup demo as a newcomer runs it (`npm start` runs `kms demo`): no database, HSM or PKI installed.
// It must write demo.json in the documented shape only once all three KMEs serve keys, and serve them: a same-KME
// pair, a direct pair and a relayed pair.

t.test('kms demo: three KMEs, demo.json, keys across the network, clean exit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kms-demo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const demo = runKms(['demo'], { KMS_DEMO_DIR: dir, KMS_DEMO_PORT: '0', DATABASE_URL: undefined });
  t.teardown(() => demo.child.kill('SIGKILL'));
  const manifest = join(dir, 'demo.json');
  await waitFor(demo, () => existsSync(manifest), 60_000, 'demo.json');
  t.match(demo.stdout, /DEMO MODE/, 'says loudly that it is a demo');
  t.match(demo.stdout, /NOT an HSM/);

  const m = JSON.parse(readFileSync(manifest, 'utf8'));
  t.same(Object.keys(m).sort(), ['auditors', 'ca', 'kmes', 'operators', 'saes', 'strangers']);
  t.ok(m.operators.OPERATOR_1?.cert, 'the operator certificate that kms sae … uses by default');
  t.ok(m.auditors.AUDITOR_1?.cert, 'the auditor certificate that reads the three logs (kms audit trace)');
  t.same(m.kmes.map((k: { id: string }) => k.id), ['KME_A', 'KME_B', 'KME_C'], 'KME_A first');
  t.match(m.kmes[0], { id: 'KME_A', url: /^https:\/\/localhost:\d+$/, saes: ['SAE_A', 'SAE_D'] });
  t.match(m.kmes[1], { id: 'KME_B', saes: ['SAE_B'] });
  t.match(m.kmes[2], { id: 'KME_C', saes: ['SAE_C'] });
  t.same(Object.keys(m.saes).sort(), ['SAE_A', 'SAE_B', 'SAE_C', 'SAE_D']);
  t.same(Object.keys(m.strangers), ['SAE_X']);
  for (const f of [m.ca, ...Object.values<{ cert: string; key: string }>({ ...m.saes, ...m.strangers }).flatMap((e) => [e.cert, e.key])]) {
    t.ok(isAbsolute(f) && existsSync(f), `${f} is an absolute path that exists`);
  }

  const urlOf = (i: number) => m.kmes[i].url.replace('localhost', '127.0.0.1');
  const a = new EtsiClient(urlOf(0), m.ca, m.saes.SAE_A);
  const d = new EtsiClient(urlOf(0), m.ca, m.saes.SAE_D);
  const b = new EtsiClient(urlOf(1), m.ca, m.saes.SAE_B);
  const c = new EtsiClient(urlOf(2), m.ca, m.saes.SAE_C);
  const x = new EtsiClient(urlOf(0), m.ca, m.strangers.SAE_X);
  t.teardown(() => [a, b, c, d, x].forEach((client) => client.close()));
  for (const [slave, client, what] of [
    ['SAE_D', d, 'same KME'],
    ['SAE_B', b, 'direct link'],
    ['SAE_C', c, 'relayed through KME_B'],
  ] as const) {
    const enc = await a.get(`/api/v1/keys/${slave}/enc_keys`);
    t.equal(enc.status, 200, `${what}: a key for SAE_A, right away`);
    const dec = await client.get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${enc.body.keys[0].key_ID}`);
    t.same(dec.body, enc.body, `${what}: the same key for ${slave} from its own KME`);
  }
  t.equal((await x.get('/api/v1/keys/SAE_B/status')).status, 401, 'the stranger gets nothing');

  // Each KME's metrics on its ops listener (docs/observability.md): KME_A counts the three keys it handed SAE_A.
  t.match(m.kmes[0], { metrics: /^http:\/\/127\.0\.0\.1:\d+\/metrics$/ });
  const metrics = await (await fetch(m.kmes[0].metrics)).text();
  for (const slave of ['SAE_B', 'SAE_C', 'SAE_D']) {
    t.match(metrics, new RegExp(`^qkms_keys_delivered_total\\{operation="enc_keys",master_sae="SAE_A",slave_sae="${slave}",kme_id="KME_A"\\} 1$`, 'm'), `KME_A: a key for SAE_A → ${slave}`);
  }

  // An operator at the demo, as the README shows: kms sae with nothing but the demo's folder.
  const list = runKms(['sae', 'list', '--demo', dir, '--kme', 'KME_B']);
  t.equal(await list.exited, 0, list.stderr);
  t.match(list.stdout, /^SAE\s+STATUS\s+CERTIFICATE CN/m, 'a table');
  t.match(list.stdout, /^SAE_B\s+active\s+SAE_B\s+any\s+-\s+config/m, "KME_B's SAE");
  t.notMatch(list.stdout, /SAE_A/, "KME_A's SAEs are KME_A's");

  demo.child.kill('SIGTERM');
  t.equal(await demo.exited, 0);
  t.notOk(existsSync(manifest), 'demo.json is removed when the demo stops');
});
