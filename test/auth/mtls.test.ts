import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createCa, issueClientCert, loadIssued, writeIssued } from '../../src/pki/certificates.js';
import { EtsiClient } from '../helpers/client.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Mutual TLS over real sockets: who gets a key and who never does.

let k: TestKms;
const dir = mkdtempSync(join(tmpdir(), 'kms-mtls-'));
let expired: { cert: string; key: string };
let foreign: { cert: string; key: string };
let foreignCa: string;

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 200 } });
  const ca = await loadIssued(join(k.pkiDir, 'ca.crt'), join(k.pkiDir, 'ca.key'));
  const day = 86_400_000;
  expired = writeIssued(dir, 'expired-SAE_A', await issueClientCert(ca, {
    commonName: 'SAE_A', notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day),
  }));
  const other = await createCa({ commonName: 'Some other CA' });
  foreignCa = writeIssued(dir, 'foreign-ca', other).cert;
  foreign = writeIssued(dir, 'foreign-SAE_A', await issueClientCert(other, { commonName: 'SAE_A' }));
});
t.teardown(async () => {
  await k.close();
  rmSync(dir, { recursive: true, force: true });
});

const paths = ['/api/v1/keys/SAE_B/status', '/api/v1/keys/SAE_B/enc_keys', '/api/v1/keys/SAE_A/dec_keys?key_ID=00000000-0000-4000-8000-000000000000'];

async function expect401(t: Test, client: EtsiClient, reason: RegExp) {
  for (const path of paths) {
    const res = await client.get(path);
    t.equal(res.status, 401, `${path}: 401`);
    t.match(res.body?.message, reason, `${path}: says why`);
    t.notOk(res.body?.keys, `${path}: no keys`);
  }
  const post = await client.post('/api/v1/keys/SAE_B/enc_keys', { number: 1 });
  t.equal(post.status, 401, 'POST enc_keys: 401');
  client.close();
}

t.test('a registered SAE certificate gets keys', async (t) => {
  const res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(res.status, 200);
});

t.test('no client certificate', async (t) => {
  await expect401(t, new EtsiClient(k.kms.url, k.pki.ca), /no client certificate/);
});

t.test('a certificate of the right CA for an unregistered SAE', async (t) => {
  await expect401(t, k.client('SAE_X'), /not registered as an SAE/);
});

t.test("the KME's own certificate is not an SAE", async (t) => {
  await expect401(t, new EtsiClient(k.kms.url, k.pki.ca, k.pki.kmes.KME_T), /not registered as an SAE/);
});

t.test('an expired certificate of a registered SAE', async (t) => {
  await expect401(t, new EtsiClient(k.kms.url, k.pki.ca, expired), /expired/);
});

t.test('a certificate from a foreign CA with a registered CN', async (t) => {
  await expect401(t, new EtsiClient(k.kms.url, k.pki.ca, foreign), /not issued by a CA this KME trusts/);
});

t.test('TLS older than 1.2 is refused at the handshake', async (t) => {
  const old = new EtsiClient(k.kms.url, k.pki.ca, k.pki.saes.SAE_A, { maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
  await t.rejects(old.get('/api/v1/keys/SAE_B/status'), 'handshake fails');
  old.close();
});

t.test('the client can verify the KME by host name (localhost) and IP', async (t) => {
  const port = new URL(k.kms.url).port;
  for (const host of ['localhost', '127.0.0.1']) {
    const c = new EtsiClient(`https://${host}:${port}`, k.pki.ca, k.pki.saes.SAE_A);
    const res = await c.get('/api/v1/keys/SAE_B/status').catch((e: Error) => ({ status: 0, error: e.message }));
    if (host === 'localhost' && res.status === 0) {
      t.comment('localhost did not resolve to 127.0.0.1 here; skipped that host');
    } else {
      t.equal(res.status, 200, host);
    }
    c.close();
  }
  const wrongCa = new EtsiClient(k.kms.url, foreignCa, k.pki.saes.SAE_A);
  await t.rejects(wrongCa.get('/api/v1/keys/SAE_B/status'), 'a client that trusts another CA refuses the KME');
  wrongCa.close();
});

t.test('a resumed TLS session keeps its identity', async (t) => {
  // Clients that connect afresh for every key resume their TLS session; the resumed session must still carry
  // the verified certificate (and so the SAE identity), never fall back to anonymous or to someone else.
  const { port } = new URL(k.kms.url);
  const ask = (session?: Buffer) =>
    new Promise<{ reused: boolean; session?: Buffer; body: string }>((resolve, reject) => {
      let ticket: Buffer | undefined;
      const socket = connect({
        host: '127.0.0.1', port: Number(port), servername: 'localhost', session,
        ca: readFileSync(k.pki.ca), cert: readFileSync(k.pki.saes.SAE_B!.cert), key: readFileSync(k.pki.saes.SAE_B!.key),
      });
      socket.on('session', (s: Buffer) => (ticket = s));
      let body = '';
      socket.on('secureConnect', () => {
        socket.write('GET /api/v1/keys/SAE_A/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      });
      socket.on('data', (d: Buffer) => (body += d.toString()));
      socket.on('end', () => resolve({ reused: socket.isSessionReused(), session: ticket, body }));
      socket.on('error', reject);
    });
  const first = await ask();
  t.match(first.body, /"master_SAE_ID":"SAE_B"/);
  t.ok(first.session, 'the server issued a session ticket');
  const second = await ask(first.session);
  t.ok(second.reused, 'the second connection resumed the session');
  t.match(second.body, /^HTTP\/1.1 200/);
  t.match(second.body, /"master_SAE_ID":"SAE_B"/, 'and is still SAE_B');
});
