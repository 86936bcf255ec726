import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { connect } from 'node:tls';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { JsonClient } from '../../src/http/json-client.js';
import { PeerClient } from '../../src/peers/peer-client.js';
import { createEtsi014Source } from '../../src/sources/etsi014.js';
import { postQuantumGroups } from '../../src/tls.js';
import { capturingLogger } from '../helpers/logs.js';
import { startTestKms } from '../helpers/kms.js';
import { testPki } from '../helpers/network.js';

// Issue 15 item 4: on a Node whose OpenSSL has ML-KEM (Node 24: OpenSSL 3.5), every TLS interface of the KME
// negotiates the hybrid group X25519MLKEM768: its listener (ETSI, KME-to-KME, admin and auditor APIs share it), and
// each client it runs (to peer KMEs, to QKD devices, the operator's and agent's JsonClient). A server is checked with a
// client that offers no other group; a client with a server that accepts no other group (so the handshake itself
// proves the group), and the client's view of the handshake names it.
const PQ_ONLY = 'X25519MLKEM768';
const skip = postQuantumGroups ? false : `this Node's OpenSSL ${process.versions.openssl} has no ML-KEM; CI runs this file on Node 24 too`;
if (skip) t.comment(`post-quantum TLS checks skipped: ${skip}`);

t.test('without ML-KEM, the KME keeps Node\'s default groups', { skip: !skip && 'this OpenSSL has ML-KEM' }, async (t) => {
  t.equal(postQuantumGroups, undefined);
});

t.test('the KME listener negotiates X25519MLKEM768', { skip }, async (t) => {
  const kme = await startTestKms({ fill: false });
  t.teardown(() => kme.close());
  const { port } = new URL(kme.kms.url);
  const group = await new Promise<string | undefined>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port), ca: readFileSync(kme.pki.ca), servername: 'localhost', ecdhCurve: PQ_ONLY }, () => {
      resolve((socket.getEphemeralKeyInfo() as { name?: string } | null)?.name);
      socket.end();
    });
    socket.once('error', reject);
  });
  t.equal(group, PQ_ONLY);
});

t.test("the KME's clients offer X25519MLKEM768 (a server that accepts nothing else answers them)", { skip }, async (t) => {
  const { pki } = await testPki();
  const kmeB = pki.kmes.KME_B!;
  const seen: string[] = [];
  // Stands in for a peer KME and a QKD device: any request gets `{}`; only its path is recorded.
  const server: Server = createServer({ cert: readFileSync(kmeB.cert), key: readFileSync(kmeB.key), ca: readFileSync(pki.ca), requestCert: true, ecdhCurve: PQ_ONLY }, (req, res) => {
    seen.push(req.url ?? '');
    res.setHeader('content-type', 'application/json');
    res.end(req.url?.includes('/status') ? JSON.stringify({ key_size: 256, max_key_per_request: 8, max_key_count: 100 }) : '{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const url = `https://localhost:${(server.address() as AddressInfo).port}`;
  const mine = pki.kmes.KME_A!;

  const peer = new PeerClient({ kme_id: 'KME_B', url } as never, { ca: readFileSync(pki.ca), cert: readFileSync(mine.cert), key: readFileSync(mine.key), ...(postQuantumGroups ? { ecdhCurve: postQuantumGroups } : {}) }, 3_000);
  t.teardown(() => peer.close());
  const json = new JsonClient({ ca: pki.ca, cert: mine.cert, key: mine.key });
  t.teardown(() => json.close());
  t.same(await json.call('GET', `${url}/admin/v1/json-client`), {}, 'JsonClient (kms admin commands, the consumer agent)');

  const { log } = capturingLogger();
  const device = await createEtsi014Source(
    { type: 'etsi014', url, ca: pki.ca, cert: mine.cert, key: mine.key, peer_sae_id: 'QKD_B', keys_per_request: 8, timeout_ms: 3_000 },
    { kmeId: 'KME_A', linkId: 'A-B', blockBits: 256, role: 'primary', startSeq: async () => '0', log },
  );
  t.teardown(() => device.close());
  await device.take(1).catch(() => undefined); // `{}` is no key container: what matters is that the request got there
  t.ok(seen.some((p) => p.includes('/status')), 'the ETSI 014 device driver reached the device');
  t.same(await peer.get('/peer/v1/kem-key'), {}, 'the KME-to-KME client (its TLS options as src/server.ts gives them)');
});
