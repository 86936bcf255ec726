import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { tlsCommand } from '../../src/admin/tls-cli.js';
import { issueServerCert, loadIssued, type Issued } from '../../src/pki/certificates.js';
import { revokeInCrl } from '../../src/pki/crl.js';
import { EtsiClient, answered } from '../helpers/client.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 item 6: certificate rotation without a restart, on a real KME over real TLS. The server certificate, the
// CA bundle and a CRL are reloaded from their files (admin API / kms tls reload, and the SIGHUP path); a client
// certificate revoked in the CRL is refused on a connection it already holds open and on new ones; a bad file
// refuses the reload and leaves what was in force; every reload is a custody event.

const dir = mkdtempSync(join(tmpdir(), 'kms-tls-reload-'));
let k: TestKms;
let ca: Issued;
const files = { cert: join(dir, 'kme.crt'), key: join(dir, 'kme.key'), crl: join(dir, 'crl.pem') };
const operator = () => k.client('OPERATOR_1');

t.before(async () => {
  const first = await startTestKms({ fill: false });
  // The KME's own files are copies this test may rewrite; the CRL starts out revoking a stranger's certificate.
  copyFileSync(first.config.tls.cert, files.cert);
  copyFileSync(first.config.tls.key, files.key);
  ca = await loadIssued(join(first.pkiDir, 'ca.crt'), join(first.pkiDir, 'ca.key'));
  const stranger = await loadIssued(first.pki.strangers.SAE_X!.cert, first.pki.strangers.SAE_X!.key);
  await revokeInCrl(ca, files.crl, stranger.cert.serialNumber);
  await first.close();
  k = await startTestKms({ keys: { max_key_count: 100 }, tls: files });
});
t.teardown(async () => {
  await k?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The fingerprint of the certificate a fresh TLS connection to the KME is shown. */
function serverFingerprint(): Promise<string> {
  const { port } = new URL(k.kms.url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(port), ca: readFileSync(k.pki.ca), servername: 'localhost' }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}

t.test('a certificate revoked in the CRL is refused on its open connection and on new ones; others are not', async (t) => {
  const c = k.client('SAE_C');
  t.equal((await c.get('/api/v1/keys/SAE_A/status')).status, 200, 'SAE_C holds an open connection');
  const before = await operator().get('/admin/v1/tls');
  t.match(before.body, { trust: { crls: [{ revoked: 1 }], reloads: 0 } });

  const sae = await loadIssued(k.pki.saes.SAE_C!.cert, k.pki.saes.SAE_C!.key);
  await revokeInCrl(ca, files.crl, sae.cert.serialNumber);
  const reload = await operator().post('/admin/v1/tls/reload', { reason: 'SAE_C key compromised' });
  t.equal(reload.status, 200, answered(reload));
  t.match(reload.body, { trust: { crls: [{ revoked: 2 }], reloads: 1 } });

  const open = await c.get('/api/v1/keys/SAE_A/status');
  t.equal(open.status, 401, 'refused on the connection it held open');
  t.match(open.body.message, /revoked/);
  const fresh = new EtsiClient(k.kms.url, k.pki.ca, k.pki.saes.SAE_C!);
  t.teardown(() => fresh.close());
  const refused = await fresh.get('/api/v1/keys/SAE_A/status');
  t.equal(refused.status, 401, 'and on a new connection');
  t.match(refused.body.message, /certificate has been revoked/);
  t.equal((await k.client('SAE_A').get('/api/v1/keys/SAE_C/status')).status, 200, 'SAE_A is not affected');
});

t.test('a new server certificate is in force for new connections at once', async (t) => {
  const old = await serverFingerprint();
  const next = await issueServerCert(ca, { commonName: 'KME_T', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  writeFileSync(files.cert, next.certPem);
  writeFileSync(files.key, next.keyPem);
  const reload = await k.kms.reloadTls('SIGHUP');
  t.not(reload.server_certificate.sha256, old);
  t.equal(await serverFingerprint(), reload.server_certificate.sha256, 'a new connection sees the new certificate');
  t.equal((await k.client('SAE_A').get('/api/v1/keys/SAE_B/status')).status, 200, 'SAE_A still served');
});

t.test('a bad file refuses the reload, names the file and changes nothing', async (t) => {
  const before = (await operator().get('/admin/v1/tls')).body;
  writeFileSync(files.crl, 'not a CRL');
  const bad = await operator().post('/admin/v1/tls/reload', {});
  t.equal(bad.status, 400);
  t.match(bad.body.message, /not reloaded \(what was in force stays\)/);
  const other = await loadIssued(k.pki.kmes.KME_T!.cert, k.pki.kmes.KME_T!.key);
  writeFileSync(files.crl, '');
  writeFileSync(files.key, other.keyPem); // the key of another certificate
  const mismatch = await operator().post('/admin/v1/tls/reload', {});
  t.equal(mismatch.status, 400, 'a key that is not the certificate\'s');
  t.same((await operator().get('/admin/v1/tls')).body, before, 'what was in force stays');
  t.equal((await k.client('SAE_A').get('/api/v1/keys/SAE_B/status')).status, 200);
});

t.test('kms tls show; every reload is a custody event', async (t) => {
  const op = k.pki.operators.OPERATOR_1!;
  const out: string[] = [];
  const code = await tlsCommand(['show', '--url', k.kms.url, '--ca', k.pki.ca, '--cert', op.cert, '--key', op.key], (l) => out.push(l), () => undefined);
  t.equal(code, 0);
  t.match(out.join('\n'), /^server certificate {2}CN=KME_T {2}valid until \d{4}-/m);
  t.match(out.join('\n'), /^CRL ISSUER\s+REVOKED\s+THIS UPDATE\s+NEXT UPDATE$/m);
  t.match(out.join('\n'), /reloads since start: 2, the last at/);
  const { rows } = await k.kms.db.query(`SELECT actor, body::jsonb #>> '{detail,why}' AS why FROM audit_event WHERE operation = 'tls' ORDER BY seq`);
  t.same(rows.map((r) => [r.actor, r.why]), [
    ['operator:OPERATOR_1', 'SAE_C key compromised'],
    ['kme:KME_T', 'SIGHUP'],
  ]);
});
