import t from 'tap';
import { NOT_FOUND } from '../helpers/etsi.js';
import { LINE, startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { eraseNow, heldMaterial } from '../helpers/pool-state.js';
import { answered } from '../helpers/client.js';

// Three real KMEs in a line (each its own database, real TLS between them): the slave gets exactly the master's
// keys from its own KME, for direct, relayed and same-KME pairs, in both directions; material is erased at every
// KME once delivered; status tells the truth for each kind of pair; KME and SAE certificates never swap roles.

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({ ...LINE, fill: 300 });
  t.comment(`databases: ${net.kme('KME_A').db.kind}`);
});
t.teardown(() => net?.close());

const pairs: Array<[string, string, string]> = [
  ['SAE_A', 'SAE_B', 'direct, from the primary end'],
  ['SAE_B', 'SAE_A', 'direct, from the secondary end'],
  ['SAE_A', 'SAE_C', 'relayed through KME_B'],
  ['SAE_C', 'SAE_A', 'relayed the other way'],
  ['SAE_A', 'SAE_D', 'same KME'],
];

for (const [master, slave, what] of pairs) {
  t.test(`${master} → ${slave} (${what}): the slave gets the same keys at its own KME, once`, async (t) => {
    const m = net.client(master);
    const s = net.client(slave);
    const enc = await m.post(`/api/v1/keys/${slave}/enc_keys`, { number: 3, size: 512 });
    t.equal(enc.status, 200, answered(enc, 'enc_keys'));
    t.equal(enc.body.keys.length, 3);
    const ids = enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID }));
    const dec = await s.post(`/api/v1/keys/${master}/dec_keys`, { key_IDs: ids });
    t.equal(dec.status, 200, answered(dec, 'dec_keys'));
    t.same(dec.body, enc.body, 'identical keys');
    const again = await s.post(`/api/v1/keys/${master}/dec_keys`, { key_IDs: ids });
    t.equal(again.status, 400);
    t.equal(again.body.message, NOT_FOUND, 'a second fetch finds nothing');
  });
}

t.test('concurrent relays share batches at the trusted node, each with pads of its own', async (t) => {
  // Many requests at once reach KME_B as batches of ext_keys requests; each needs its own pads on B-C.
  const masters = Array.from({ length: 8 }, () => net.client('SAE_A'));
  const answers = await Promise.all(
    Array.from({ length: 40 }, (_, i) => masters[i % masters.length]!.post('/api/v1/keys/SAE_C/enc_keys', { number: 2 })),
  );
  const refused = answers.filter((a) => a.status !== 200);
  t.same(refused.map((a) => `${a.status} ${a.text}`).slice(0, 3), [], 'every request served');
  const keys = answers.filter((a) => a.status === 200).flatMap((a) => a.body.keys as Array<{ key_ID: string; key: string }>);
  t.equal(new Set(keys.map((k) => k.key)).size, keys.length, `no key twice among ${keys.length}`);
  const dec = await net.client('SAE_C').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: keys.map((k) => ({ key_ID: k.key_ID })) });
  t.same(dec.body?.keys, keys, 'SAE_C gets every one of them from KME_C');
});

t.test('material is erased at every KME that held a delivered key, the trusted node included', async (t) => {
  const enc = await net.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys?number=2');
  t.equal(enc.status, 200);
  const ids: string[] = enc.body.keys.map((k: { key_ID: string }) => k.key_ID);
  const dec = await net.client('SAE_C').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids.map((key_ID) => ({ key_ID })) });
  t.equal(dec.status, 200);
  for (const id of ['KME_A', 'KME_B', 'KME_C']) {
    const { kms } = net.kme(id);
    const { rows } = await kms.db.query(
      `SELECT count(*)::int AS live FROM qkd_key WHERE key_id = ANY($1::uuid[]) AND (state <> 'DESTROYED' OR wrapped IS NOT NULL)`,
      [ids],
    );
    await eraseNow(kms.db, kms.wrapper);
    t.same({ live: rows[0].live, held: await heldMaterial(kms.db, ids) }, { live: 0, held: 0 }, `${id}: keys destroyed, their material erased`);
  }
  // The pads of the relay hop were spent at both ends of B-C.
  for (const id of ['KME_B', 'KME_C']) {
    const { rows } = await net.kme(id).kms.db.query(
      `SELECT count(*)::int AS n FROM audit_event WHERE key_ids && $1::uuid[] AND operation IN ('reserve', 'relay', 'deliver_slave', 'destroy')`,
      [ids],
    );
    t.ok(rows[0].n > 0, `${id} audited its part`);
  }
});

t.test('status: true figures per kind of pair, and target_KME_ID names the slave\'s KME', async (t) => {
  const a = net.client('SAE_A');
  for (const [slave, kme, route] of [
    ['SAE_B', 'KME_B', 'direct'],
    ['SAE_C', 'KME_C', 'indirect'],
    ['SAE_D', 'KME_A', undefined],
  ] as const) {
    const res = await a.get(`/api/v1/keys/${slave}/status`);
    t.equal(res.status, 200);
    t.equal(res.body.target_KME_ID, kme);
    t.ok(res.body.stored_key_count > 0, `${slave}: keys deliverable (${res.body.stored_key_count})`);
    t.equal(res.body.status_extension?.qkms_route_type, route);
  }
  // The relayed figure is bounded by what KME_B can carry on to KME_C.
  const relayed = (await a.get('/api/v1/keys/SAE_C/status')).body.stored_key_count;
  const { rows } = await net.kme('KME_B').kms.db.query(`SELECT COALESCE(sum(available), 0)::int AS n FROM pool_count WHERE link_id = 'B-C'`);
  t.ok(relayed <= rows[0].n + 50, `relayed count ${relayed} is bounded by KME_B's share of B-C (${rows[0].n}, give or take a sync)`);
});

t.test('multicast across KMEs: B, C and D each get the key once from their own KME', async (t) => {
  const enc = await net.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', {
    number: 2,
    additional_slave_SAE_IDs: ['SAE_C', 'SAE_D'],
  });
  t.equal(enc.status, 200, answered(enc, 'enc_keys'));
  const ids = enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID }));
  for (const slave of ['SAE_B', 'SAE_C', 'SAE_D']) {
    const dec = await net.client(slave).post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids });
    t.same(dec.body, enc.body, `${slave} got the master's keys`);
  }
  // An SAE that was not named as a slave gets 401 (ETSI 014 §6.3), the master itself included.
  const master = await net.client('SAE_A').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids });
  t.equal(master.status, 401, 'the master cannot fetch its own keys as a slave');
});

t.test('qkms_route_type: direct is honoured or refused, never silently ignored', async (t) => {
  const a = net.client('SAE_A');
  const ok = await a.post('/api/v1/keys/SAE_B/enc_keys', { extension_mandatory: [{ qkms_route_type: 'direct' }] });
  t.equal(ok.status, 200, 'direct to a neighbour');
  const no = await a.post('/api/v1/keys/SAE_C/enc_keys', { extension_mandatory: [{ qkms_route_type: 'direct' }] });
  t.equal(no.status, 400);
  t.equal(no.body.message, 'not all extension_mandatory request options could be met');
  const relayed = await a.post('/api/v1/keys/SAE_C/enc_keys', { extension_mandatory: [{ qkms_route_type: 'indirect' }] });
  t.equal(relayed.status, 200, 'indirect is possible');
  const bad = await a.post('/api/v1/keys/SAE_C/enc_keys', { extension_mandatory: [{ qkms_route_type: 'teleport' }] });
  t.equal(bad.status, 400);
});

t.test('roles: a KME certificate is never an SAE, an SAE certificate never a KME', async (t) => {
  const { EtsiClient } = await import('../helpers/client.js');
  const url = net.kme('KME_A').kms.url.replace('127.0.0.1', 'localhost');
  const kmeAsSae = new EtsiClient(url, net.pki.ca, net.pki.kmes.KME_B);
  const saeAsKme = net.client('SAE_B', 'KME_A');
  t.teardown(() => kmeAsSae.close());
  const s = await kmeAsSae.get('/api/v1/keys/SAE_A/status');
  t.equal(s.status, 401, 'KME_B certificate on the ETSI API');
  const p = await saeAsKme.post('/kmapi/v1/ext_keys', { requests: [], qkms_deadline_ms: 1000 });
  t.equal(p.status, 401, 'SAE certificate on the KME-to-KME API');
  t.match(p.body.message, /not a peer KME/);
  const sync = await saeAsKme.post('/peer/v1/links/A-B/sync', {});
  t.equal(sync.status, 401);
  // A peer may only touch links it shares: KME_B cannot speak for link B-C at KME_A (KME_A has no such link).
  const wrongLink = await kmeAsSae.post('/peer/v1/links/A-local/sync', {
    kme_id: 'KME_B', block_bits: 256, primary_kme_id: 'KME_A', watermark: null, room: 0, reach: [],
  });
  t.equal(wrongLink.status, 401, 'a link the caller is not an end of');
});

t.test("a trusted node spends no one-time pad of a pool its operator holds: the relay is refused with the reason", async (t) => {
  const operatorAtB = net.client('OPERATOR_1', 'KME_B');
  t.equal((await operatorAtB.post('/admin/v1/pools/B-C/suspend', { reason: 'maintenance' })).status, 200);
  const refused = await net.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys');
  t.equal(refused.status, 503);
  t.match(refused.body.message, /refused the keys: the key pool of link B-C is suspended by an operator/);
  t.equal((await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys')).status, 200, 'a pair that does not cross B-C is served');
  t.equal((await operatorAtB.post('/admin/v1/pools/B-C/resume', {})).status, 200);
  t.equal((await net.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys')).status, 200, 'resumed: relayed again');
});
