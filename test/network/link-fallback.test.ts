import t from 'tap';
import { eventually } from '../helpers/etsi.js';
import { databaseHaystack, findLeaks } from '../helpers/leak-scan.js';
import { startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { LifecycleReplay } from '../../src/audit/lifecycle-replay.js';
import { answered } from '../helpers/client.js';

// Issue 13 items 4 and 7: a link cut with each link-failure policy. KME_A (SAE_A, SAE_D) and KME_B (SAE_B, SAE_C) share
// the QKD link A-B; KME_A also has a loopback link for its own pairs. SAE_A → SAE_B and SAE_A → SAE_D allow the
// post-quantum fallback; SAE_D → SAE_C keeps the default (fail_closed). KME_A's simulated device of A-B goes down (an
// outage, as a cut fibre) and the pool is drained: the fail-closed pair gets 503s, the fallback pair gets keys the
// master's KME made and sealed to KME_B's ML-KEM-768+X25519 key, marked as such everywhere, and QKD keys again — with
// the switch back audited — once the link returns. A pair whose policy at the slave's KME forbids the fallback never
// gets a fallback key, and with the KME-to-KME channel cut too there is nothing to fall back on.

let net: TestNetwork;
// The link stays down until the test brings it back (a timed outage ran out on a loaded machine while the pool drained).
const OUTAGE_MS = 10 * 60_000;
type Key = { key_ID: string; key: string };
const fallbackKeys: Key[] = [];

t.before(async () => {
  net = await startTestNetwork({
    kmes: [
      { id: 'KME_A', saes: ['SAE_A', 'SAE_D'] },
      // The slave's KME as `kms serve` on a SoftHSM2 token: the fallback keys it takes are sealed by a real PKCS#11 KEK.
      { id: 'KME_B', saes: ['SAE_B', 'SAE_C'], process: true },
    ],
    links: [
      { id: 'A-local', ends: ['KME_A'] },
      { id: 'A-B', ends: ['KME_A', 'KME_B'], rateBitsPerSecond: 2_000_000 },
    ],
    keys: { max_key_count: 1_000 },
    fill: 100,
  });
});
t.teardown(() => net?.close());

const operatorAt = (kme: string) => net.client('OPERATOR_1', kme);
const enc = (master: string, slave: string, body: object = {}) => net.client(master).post(`/api/v1/keys/${slave}/enc_keys`, body);
const events = (kme: string, operation: string) =>
  net.kme(kme).query(`SELECT body FROM audit_event WHERE operation = $1 ORDER BY seq`, [operation]).then((rows) => rows.map((r) => JSON.parse(r.body as string)));

/** What a failed request said (an Error body never carries a key; a 200's body does, and is not printed). */

/** Takes keys for a pair until its pool has none left, and returns how many it took and of which origins. */
async function drain(master: string, slave: string): Promise<{ taken: number; origins: Set<string> }> {
  const origins = new Set<string>();
  let taken = 0;
  for (const number of [16, 1]) {
    for (let i = 0; i < 500; i++) {
      const res = await enc(master, slave, { number });
      if (res.status !== 200) break;
      origins.add(res.body.key_container_extension?.qkms_key_origin);
      taken += res.body.keys.length;
    }
  }
  return { taken, origins };
}

async function setFallback(kme: string, a: string, b: string): Promise<void> {
  const res = await operatorAt(kme).put(`/admin/v1/policies/${a}/${b}`, { link_failure: 'pqc_fallback' });
  if (res.status !== 200) throw new Error(`policy at ${kme}: ${res.status} ${res.text}`);
}

t.test('with the link up, every pair gets QKD keys, marked qkd', async (t) => {
  await setFallback('KME_A', 'SAE_A', 'SAE_B');
  await setFallback('KME_A', 'SAE_A', 'SAE_D');
  for (const [m, s] of [['SAE_A', 'SAE_B'], ['SAE_D', 'SAE_C'], ['SAE_A', 'SAE_D']] as const) {
    const res = await enc(m, s);
    t.equal(res.status, 200, answered(res, `${m} → ${s}`));
    t.same(res.body.key_container_extension, { qkms_key_origin: 'qkd' }, `${m} → ${s}: origin qkd`);
  }
  const status = await net.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.match(status.body.status_extension.qkms_fallback, { policy: 'pqc_fallback', next_key_origin: 'qkd', link_in_fallback: false });
  t.notOk((await net.client('SAE_D').get('/api/v1/keys/SAE_C/status')).body.status_extension.qkms_fallback, 'no fallback figures for a fail-closed pair');
});

t.test('the link goes down and its pool runs dry', async (t) => {
  // One end down stops the link: the primary reads nothing new, or the secondary cannot confirm what it announces.
  net.device('KME_A', 'A-B').outage(OUTAGE_MS);
  await new Promise((r) => setTimeout(r, 1_500)); // material already read from the devices is confirmed meanwhile
  // Drain KME_A's share of the pool through the fail-closed pair, whose keys are all QKD keys.
  const { taken, origins } = await drain('SAE_D', 'SAE_C');
  t.same([...origins], taken > 0 ? ['qkd'] : [], `while the pool lasted: ${taken} QKD keys`);
  const refused = await enc('SAE_D', 'SAE_C');
  t.equal(refused.status, 503, 'fail_closed: 503');
  t.match(refused.body.message, /not enough key material/);
});

t.test("a pair whose policy at the slave's KME does not allow the fallback gets none", async (t) => {
  const res = await enc('SAE_A', 'SAE_B');
  t.equal(res.status, 503, answered(res, '503'));
  t.match(res.body.message, /the policy of SAE_A and SAE_B at KME_B does not allow fallback keys/, 'the slave KME\'s refusal is passed on');
  const made = await net.kme('KME_B').query(`SELECT count(*)::int AS n FROM qkd_key WHERE origin = 'pqc_fallback'`);
  t.equal(made[0]!.n, 0, 'KME_B holds no fallback key');
});

t.test('pqc_fallback: keys made by the master\'s KME, sealed to the peer, delivered and fetched as usual', async (t) => {
  await setFallback('KME_B', 'SAE_A', 'SAE_B');
  const status = await net.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.equal(status.body.status_extension.qkms_fallback.next_key_origin, 'pqc_fallback', 'status says what the next key will be');
  t.equal(status.body.stored_key_count, status.body.max_key_count, 'and that keys can be had');
  for (const body of [{}, { number: 3, size: 512 }]) {
    const res = await enc('SAE_A', 'SAE_B', body);
    t.equal(res.status, 200, answered(res, 'a fallback key'));
    t.same(res.body.key_container_extension, { qkms_key_origin: 'pqc_fallback' });
    fallbackKeys.push(...res.body.keys);
    const dec = await net.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: res.body.keys.map((k: Key) => ({ key_ID: k.key_ID })) });
    t.equal(dec.status, 200, answered(dec, 'dec_keys'));
    t.ok(JSON.stringify(dec.body.keys) === JSON.stringify(res.body.keys), 'the slave gets the same keys at its own KME');
    t.same(dec.body.key_container_extension, { qkms_key_origin: 'pqc_fallback' }, 'marked at the slave too');
    const again = await net.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: [{ key_ID: res.body.keys[0].key_ID }] });
    t.equal(again.status, 400, 'once only');
  }
  t.equal(fallbackKeys[3]!.key.length, Buffer.alloc(64).toString('base64').length, '512-bit keys are 512 bits');
  const fellBack = await net.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.match(fellBack.body.status_extension.qkms_fallback, { link_in_fallback: true, fallback_keys_delivered: 4 }, 'the counter');

  const switched = await events('KME_A', 'fallback');
  t.equal(switched.length, 1, 'one switch to fallback recorded');
  t.match(switched[0], { actor: 'kme:KME_A', detail: { link_id: 'A-B', change: 'start' } });
  const delivered = (await events('KME_A', 'deliver_master')).filter((e) => e.detail.origin === 'pqc_fallback');
  t.equal(delivered.flatMap((e) => e.key_ids).length, 4, "the master's deliveries are marked pqc_fallback");
  const reserved = (await events('KME_B', 'reserve')).filter((e) => e.detail.origin === 'pqc_fallback');
  t.same(reserved.flatMap((e) => e.key_ids).sort(), fallbackKeys.map((k) => k.key_ID).sort(), "and the slave KME's reservations");
  t.equal(reserved[0].detail.kem, 'ML-KEM-768+X25519');
  t.notOk('blocks' in reserved[0].detail, 'a fallback key takes no QKD material');
  for (const kme of ['KME_A', 'KME_B']) {
    const shown = await operatorAt(kme).get(`/admin/v1/keys/${fallbackKeys[0]!.key_ID}`);
    t.equal(shown.body.key_origin, 'pqc_fallback', `kms key show at ${kme} says where the key came from`);
  }
  const dec = await events('KME_B', 'deliver_slave');
  t.ok(fallbackKeys.every((k) => dec.some((e) => e.key_ids.includes(k.key_ID))), 'every fallback key fetched is audited at the slave KME');
});

t.test('fail_closed stays closed while the other pair falls back', async (t) => {
  const res = await enc('SAE_D', 'SAE_C');
  t.equal(res.status, 503, answered(res, '503'));
});

t.test('with the KME-to-KME channel cut as well, there is nothing to fall back on', async (t) => {
  await net.proxy('KME_A', 'KME_B').refuse();
  try {
    const res = await enc('SAE_A', 'SAE_B');
    t.equal(res.status, 503, answered(res, '503'));
    t.match(res.body.message, /the fallback could not reach KME_B/, res.body.message);
  } finally {
    net.proxy('KME_A', 'KME_B').restore();
  }
  const rows = await net.kme('KME_A').query(`SELECT count(*)::int AS n FROM qkd_key WHERE origin = 'pqc_fallback' AND state IN ('RESERVED', 'DELIVERED')`);
  t.equal(rows[0]!.n, 0, 'no fallback key left live at KME_A');
});

t.test('a pair of one KME falls back on its own, with no KEM (the key never leaves the KME)', async (t) => {
  net.device('KME_A', 'A-local').outage(60_000);
  let origin = 'qkd';
  let last: Key[] = [];
  let refused = 0;
  for (let i = 0; i < 200 && origin === 'qkd'; i++) {
    const res = await enc('SAE_A', 'SAE_D', { number: 16 });
    if (res.status !== 200) refused++;
    origin = res.body.key_container_extension?.qkms_key_origin ?? origin;
    last = res.body.keys ?? [];
  }
  t.equal(refused, 0, 'never refused: fallback keys once the QKD ones ran out');
  t.equal(origin, 'pqc_fallback', 'the local pair falls back once the loopback pool is dry');
  fallbackKeys.push(...last);
  const dec = await net.client('SAE_D').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: last.map((k) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200, answered(dec, 'dec_keys'));
  t.ok(JSON.stringify(dec.body.keys) === JSON.stringify(last), 'the same keys for the slave');
  t.same(dec.body.key_container_extension, { qkms_key_origin: 'pqc_fallback' });
});

t.test('when the link returns, QKD keys again, and the switch back is audited', async (t) => {
  net.device('KME_A', 'A-B').endOutage();
  const back = await eventually(
    async () => {
      const res = await enc('SAE_A', 'SAE_B');
      return res.status === 200 && res.body.key_container_extension.qkms_key_origin === 'qkd' ? res : undefined;
    },
    30_000,
    500,
  );
  t.ok(back, 'a QKD key once the link is back');
  // Recorded at the first QKD delivery once the link went 5 s without a fallback key: traffic goes on meanwhile.
  const ended = async () => (await events('KME_A', 'fallback')).filter((e) => e.detail.link_id === 'A-B');
  const switched = await eventually(async () => {
    await enc('SAE_A', 'SAE_B');
    const seen = await ended();
    return seen.length >= 2 ? seen : undefined;
  }, 15_000, 250);
  t.same(switched?.map((e) => e.detail.change), ['start', 'end'], 'one start, then one end: no flapping');
  const status = await net.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.equal(status.body.status_extension.qkms_fallback.link_in_fallback, false);
});

for (const id of ['KME_A', 'KME_B']) {
  t.test(`${id}: no fallback key in its database, audit events or logs`, async (t) => {
    t.ok(fallbackKeys.length >= 20, `${fallbackKeys.length} fallback keys to look for`);
    const { hay } = await databaseHaystack(net.kme(id).db.url);
    const leaks = findLeaks(
      fallbackKeys.map((k) => Buffer.from(k.key, 'base64')),
      { ...hay, texts: [...hay.texts, { where: 'log', text: net.kme(id).logs() }] },
    );
    t.same(leaks.slice(0, 5), [], 'nothing found');
  });
}

for (const id of ['KME_A', 'KME_B']) {
  t.test(`${id}: the verifier's lifecycle replay accepts its whole log, fallback keys included`, async (t) => {
    const rows = await net.kme(id).query(`SELECT seq, body FROM audit_event ORDER BY seq`);
    const replay = new LifecycleReplay(false);
    t.same(rows.map((r) => replay.apply(Number(r.seq), JSON.parse(r.body as string))).filter(Boolean), []);
    t.ok(rows.some((r) => /"origin":"pqc_fallback"/.test(r.body as string)), 'the log holds fallback keys');
  });
}
