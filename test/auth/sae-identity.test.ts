import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { issueClientCert, loadIssued, writeIssued } from '../../src/pki/certificates.js';
import { EtsiClient, answered } from '../helpers/client.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// How a verified certificate becomes an SAE ID (config saes[].certificate_sha256 and saes[].certificate_cn), over
// real mutual TLS. Every certificate here is issued by the KME's own CA: what decides is the mapping, not the chain.

const dir = mkdtempSync(join(tmpdir(), 'kms-sae-identity-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const fingerprint = (certPath: string) => new X509Certificate(readFileSync(certPath)).fingerprint256; // AB:CD:…
type Files = { cert: string; key: string };

// The test PKI is shared per process and made by the first startTestKms.
let pkiDir: string | undefined;

async function kmeWith(t: Test, saes: NonNullable<Parameters<typeof startTestKms>[0]>['saes']): Promise<TestKms> {
  const k = await startTestKms({ keys: { max_key_count: 50 }, saes });
  pkiDir = k.pkiDir;
  t.teardown(() => k.close());
  return k;
}

/** The test PKI folder, before a KME is configured with fingerprints from it (only a lone run needs the probe). */
async function testPkiDir(): Promise<string> {
  if (!pkiDir) {
    const probe = await startTestKms({ keys: { max_key_count: 1 } });
    pkiDir = probe.pkiDir;
    await probe.close();
  }
  return pkiDir;
}

const issue = async (pkiDir: string, name: string, commonName: string): Promise<Files> => {
  const ca = await loadIssued(join(pkiDir, 'ca.crt'), join(pkiDir, 'ca.key'));
  return writeIssued(dir, name, await issueClientCert(ca, { commonName }));
};

const clientOf = (t: Test, k: TestKms, files: Files) => {
  const c = new EtsiClient(k.kms.url, k.pki.ca, files);
  t.teardown(() => c.close());
  return c;
};

async function refused(t: Test, c: EtsiClient, why: RegExp) {
  for (const path of ['/api/v1/keys/SAE_B/status', '/api/v1/keys/SAE_B/enc_keys']) {
    const res = await c.get(path);
    t.equal(res.status, 401, `${path}: 401`);
    t.match(res.body?.message, why, `${path}: says why`);
    t.notOk(res.body?.keys, `${path}: no keys`);
  }
}

t.test('certificate_cn maps a certificate CN to an SAE ID', async (t) => {
  const k = await kmeWith(t, [{ id: 'SAE_E', certificate_cn: 'encryptor-17.example' }, { id: 'SAE_B' }]);
  const encryptor = await issue(k.pkiDir, 'encryptor-17', 'encryptor-17.example');
  const namedLikeTheId = await issue(k.pkiDir, 'cn-SAE_E', 'SAE_E');

  const e = clientOf(t, k, encryptor);
  const status = await e.get('/api/v1/keys/SAE_B/status');
  t.equal(status.status, 200, answered(status));
  t.equal(status.body?.master_SAE_ID, 'SAE_E', 'the CN encryptor-17.example is SAE_E');
  const key = await e.get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(key.status, 200, 'and gets keys as SAE_E');
  const dec = await k.client('SAE_B').get(`/api/v1/keys/SAE_E/dec_keys?key_ID=${key.body?.keys?.[0]?.key_ID}`);
  t.equal(dec.status, 200, 'the slave fetches the key from master SAE_E');
  t.same(dec.body?.keys, key.body?.keys, 'the same key');

  await refused(t, clientOf(t, k, namedLikeTheId), /CN=SAE_E\b.*not registered as an SAE/);
});

t.test('certificate_sha256 pins one certificate', async (t) => {
  const d = await testPkiDir();
  const other = await issue(d, 'second-SAE_A', 'SAE_A'); // same CA, same CN, another key pair
  const k = await kmeWith(t, [
    { id: 'SAE_A', certificate_sha256: fingerprint(join(d, 'sae-SAE_A.crt')) },
    // The other accepted spelling: lower case, no colons.
    { id: 'SAE_B', certificate_sha256: fingerprint(join(d, 'sae-SAE_B.crt')).replace(/:/g, '').toLowerCase() },
  ]);
  t.equal(k.pki.saes.SAE_A!.cert, join(k.pkiDir, 'sae-SAE_A.crt'), 'the pinned file is the one the client uses');

  const pinned = await k.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.equal(pinned.status, 200, answered(pinned, 'the pinned certificate is accepted'));
  t.equal(pinned.body?.master_SAE_ID, 'SAE_A');
  const key = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(key.status, 200, 'and gets keys');
  const dec = await k.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${key.body?.keys?.[0]?.key_ID}`);
  t.equal(dec.status, 200, 'a pin written in lower case without colons works too');

  t.not(fingerprint(other.cert), fingerprint(k.pki.saes.SAE_A!.cert), 'the second certificate differs');
  await refused(t, clientOf(t, k, other), /CN=SAE_A\b.*not registered as an SAE/);
});
