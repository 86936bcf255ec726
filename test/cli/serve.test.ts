import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { createSoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { EtsiClient } from '../helpers/client.js';
import { freshDatabase } from '../helpers/database.js';
import { runKms, waitFor } from '../helpers/process.js';

// The production path, end to end, as an operator runs it: `kms pki` issues the certificates, `kms migrate`
// prepares the database, `kms serve --config` runs against a real SoftHSM2 token and the database
// (the machine's PostgreSQL when DATABASE_URL is set, as in CI), and SIGTERM stops it cleanly.

const dir = mkdtempSync(join(tmpdir(), 'kms-serve-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const token = createSoftHsmToken(join(dir, 'hsm'), { label: 'kms-serve' });

if ('skip' in token) {
  t.comment(`production-path test skipped: ${token.skip}`);
  t.test('kms serve with PKCS#11', { skip: token.skip }, () => {});
} else {
  t.test('pki → migrate → serve → keys → SIGTERM', async (t) => {
    const db = await freshDatabase();
    t.teardown(() => db.drop());
    t.comment(`database: ${db.kind}`);
    const pki = join(dir, 'pki');
    for (const args of [
      ['pki', 'init', '--out', pki],
      ['pki', 'issue-kme', '--ca-dir', pki, '--id', 'KME_P'],
      ['pki', 'issue-sae', '--ca-dir', pki, '--id', 'SAE_A'],
      ['pki', 'issue-sae', '--ca-dir', pki, '--id', 'SAE_B'],
    ]) {
      const p = runKms(args);
      t.equal(await p.exited, 0, `kms ${args.slice(0, 2).join(' ')}: ${p.stdout}${p.stderr}`);
    }
    const config = join(dir, 'kms.json');
    writeFileSync(
      config,
      JSON.stringify({
        kme_id: 'KME_P',
        listen: { host: '127.0.0.1', port: 0 },
        tls: { cert: 'pki/kme-KME_P.crt', key: 'pki/kme-KME_P.key', ca: 'pki/ca.crt' },
        hsm: { type: 'pkcs11', module: token.module, token_label: token.tokenLabel, create_key_if_missing: true },
        saes: [{ id: 'SAE_A' }, { id: 'SAE_B' }],
        keys: { max_key_count: 500 },
        links: [{ link_id: 'KME_P-loopback', source: { type: 'simulator', rate_bits_per_second: 10_000_000 } }],
      }),
    );
    const env = { KMS_DATABASE_URL: db.url, KMS_HSM_PIN: token.pin, SOFTHSM2_CONF: token.conf };

    const migrate = runKms(['migrate', '--config', config], env);
    t.equal(await migrate.exited, 0, migrate.stderr);
    t.match(migrate.stdout, /database migrations applied/);

    const serve = runKms(['serve', '--config', config], env);
    t.teardown(() => serve.child.kill('SIGKILL'));
    await waitFor(serve, () => /"msg":"KME listening"/.test(serve.stdout), 30_000, 'KME listening');
    const listening = JSON.parse(serve.stdout.split('\n').find((l) => l.includes('"KME listening"'))!);
    t.match(listening.hsm, /PKCS#11/, 'runs on the PKCS#11 token');
    t.notMatch(serve.stdout + serve.stderr, new RegExp(token.pin), 'the PIN is never logged');

    const url = listening.url as string;
    const a = new EtsiClient(url, join(pki, 'ca.crt'), { cert: join(pki, 'sae-SAE_A.crt'), key: join(pki, 'sae-SAE_A.key') });
    const b = new EtsiClient(url, join(pki, 'ca.crt'), { cert: join(pki, 'sae-SAE_B.crt'), key: join(pki, 'sae-SAE_B.key') });
    t.teardown(() => (a.close(), b.close()));
    let enc;
    for (let i = 0; i < 100; i++) {
      enc = await a.get('/api/v1/keys/SAE_B/enc_keys?number=2');
      if (enc.status === 200) break;
      await new Promise((r) => setTimeout(r, 100)); // the pool is still filling
    }
    t.equal(enc!.status, 200, 'enc_keys answers once the pool has filled');
    const ids = enc!.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID }));
    const dec = await b.post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids });
    t.same(dec.body, enc!.body, 'the slave gets the same keys through the HSM-wrapped pool');

    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const { rows } = await client.query('SELECT DISTINCT kek_version FROM key_chunk');
    t.same(rows, [{ kek_version: 1 }], 'material is wrapped under the token KEK v1');
    await client.end();

    serve.child.kill('SIGTERM');
    t.equal(await serve.exited, 0, 'graceful exit on SIGTERM');
  });
}

t.test('bad configuration: a clear message naming the field, exit 1', async (t) => {
  const config = join(dir, 'bad.json');
  writeFileSync(config, JSON.stringify({ kme_id: 'KME_P', tls: { cert: 'a', key: 'b', ca: 'c' }, hsm: { type: 'mock' }, saes: [{ id: 'SAE_A' }], keys: { key_size: 100 } }));
  const p = runKms(['serve', '--config', config], { KMS_DATABASE_URL: 'postgresql://127.0.0.1:1/none' });
  t.equal(await p.exited, 1);
  t.match(p.stderr, /\/keys\/key_size: must be a multiple of 8 bits/);
  t.notMatch(p.stderr, /\n\s+at /, 'no stack trace for an operator error');

  const noUrl = runKms(['serve', '--config', config], { KMS_DATABASE_URL: '' });
  t.equal(await noUrl.exited, 1);
  const missing = runKms(['serve']);
  t.equal(await missing.exited, 1);
  t.match(missing.stderr, /--config FILE is required/);
  const unknown = runKms(['frobnicate']);
  t.equal(await unknown.exited, 2);
  t.match(unknown.stderr, /unknown command "frobnicate"/);
});
