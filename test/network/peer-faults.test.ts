import t from 'tap';
import { etsiErrorProblem, eventually, NOT_FOUND } from '../helpers/etsi.js';
import { PAIR, startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { answered } from '../helpers/client.js';

// Failure semantics between two KMEs (issue: "each proven by a test"): a peer that refuses connections, one that
// says nothing, an answer lost on its way back, a KME restarted with reservations pending, a slave that never
// comes (test/network/crash.test.ts kills KMEs for real). Every refusal is a quick 503 with the ETSI Error body; nothing is ever delivered twice or
// to an SAE that was not named; nothing stays reserved forever; every step is audited at each end.

const PEER_TIMEOUT_MS = 1_500;
const TTL_S = 10; // long enough for a restart on a loaded machine, short enough to watch expiry happen

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({
    ...PAIR,
    keys: { max_key_count: 1_000, key_ttl_seconds: TTL_S },
    // A slow link upkeep, so that the KME-to-KME connections stay idle between the test's own requests (the
    // lost-answer case needs the request to travel on a connection the test controls).
    network: { peer_timeout_ms: PEER_TIMEOUT_MS, sync_interval_ms: 60_000 },
    fill: 300,
  });
});
t.teardown(() => net?.close());

const events = async (kme: string, since: Date, ops: string[]) =>
  (
    await net.kme(kme).kms.db.query(
      `SELECT operation, actor, outcome, key_ids::text[] AS keys, body FROM audit_event WHERE at >= $1 AND operation = ANY($2) ORDER BY seq`,
      [since, ops],
    )
  ).rows as Array<{ operation: string; actor: string; outcome: string; keys: string[]; body: string }>;

const liveKeys = async (kme: string) =>
  (await net.kme(kme).kms.db.query(`SELECT count(*)::int AS n FROM qkd_key WHERE state IN ('RESERVED', 'DELIVERED')`)).rows[0].n as number;

t.test('peer refuses connections: 503 at once with an Error body, nothing kept, copies voided once it is back', async (t) => {
  const since = new Date();
  await net.proxy('KME_A', 'KME_B').refuse();
  const started = Date.now();
  const res = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  const took = Date.now() - started;
  t.equal(res.status, 503);
  t.notOk(etsiErrorProblem(res), 'ETSI Error body');
  t.match(res.body.message, /could not confirm/);
  t.ok(took < PEER_TIMEOUT_MS + 1_000, `answered in ${took} ms`);
  t.equal(await liveKeys('KME_A'), 0, 'nothing reserved at KME_A');
  const voided = await events('KME_A', since, ['void']);
  t.equal(voided.length, 1, 'the reserved keys were voided at KME_A, audited');
  await net.proxy('KME_A', 'KME_B').restore();
  // The void reaches KME_B on a retry: its copy of the material KME_A spent is destroyed, audited there.
  const atB = await eventually(async () => (await events('KME_B', since, ['void'])).find((e) => e.actor === 'kme:KME_A'), 10_000);
  t.ok(atB, "KME_B destroyed its copy of the spent material at KME_A's word");
  t.match(JSON.parse(atB!.body).detail, { spent_by_peer: 1 });
  const again = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(again.status, 200, 'serving again once the peer is back');
});

t.test('peer says nothing (silent network): 503 within the peer timeout', async (t) => {
  net.proxy('KME_A', 'KME_B').blackhole();
  const started = Date.now();
  const res = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  const took = Date.now() - started;
  await net.proxy('KME_A', 'KME_B').restore();
  t.equal(res.status, 503);
  t.notOk(etsiErrorProblem(res));
  t.ok(took >= PEER_TIMEOUT_MS - 100 && took < PEER_TIMEOUT_MS + 1_500, `gave up after ${took} ms (peer timeout ${PEER_TIMEOUT_MS} ms)`);
  t.equal(await liveKeys('KME_A'), 0, 'nothing reserved at KME_A');
});

t.test('the answer of the peer is lost: the keys it reserved are voided there and never handed out', async (t) => {
  const master = net.client('SAE_B');
  t.equal((await master.get('/api/v1/keys/SAE_A/enc_keys')).status, 200, 'warm: KME_B has a connection to KME_A');
  const since = new Date();
  net.proxy('KME_B', 'KME_A').dropReplies();
  const res = await master.get('/api/v1/keys/SAE_A/enc_keys?number=2');
  t.equal(res.status, 503, 'the master gets a 503');
  t.notOk(etsiErrorProblem(res));
  await net.proxy('KME_B', 'KME_A').restore();
  const reserved = (await events('KME_A', since, ['reserve'])).filter((e) => e.actor === 'kme:KME_B');
  t.equal(reserved.length, 1, 'KME_A did reserve the keys (the request arrived, only the answer was lost)');
  const keys = reserved[0]?.keys ?? [];
  t.equal(keys.length, 2);
  const voided = await eventually(async () => (await events('KME_A', since, ['void'])).find((e) => keys.every((k) => e.keys.includes(k))), 10_000);
  t.ok(voided, 'and voided them at the word of KME_B');
  const { rows } = await net.kme('KME_A').kms.db.query(
    `SELECT state, wrapped IS NULL AS erased FROM qkd_key WHERE key_id = ANY($1::uuid[])`,
    [keys],
  );
  t.same(rows, keys.map(() => ({ state: 'DESTROYED', erased: true })), 'destroyed at KME_A');
  const dec = await net.client('SAE_A').post('/api/v1/keys/SAE_B/dec_keys', { key_IDs: keys.map((key_ID) => ({ key_ID })) });
  t.equal(dec.status, 400, 'the slave cannot fetch them');
  t.equal(dec.body.message, NOT_FOUND);
  const { rows: atB } = await net.kme('KME_B').kms.db.query(`SELECT state FROM qkd_key WHERE key_id = ANY($1::uuid[])`, [keys]);
  t.same(atB, keys.map(() => ({ state: 'DESTROYED' })), 'and voided at KME_B, the origin');
});

t.test('a KME restarted with reservations pending carries on from its database', async (t) => {
  const enc = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys?number=3');
  t.equal(enc.status, 200);
  const started = Date.now();
  await net.kme('KME_B').stop();
  await net.kme('KME_B').restart();
  t.comment(`restarted in ${Date.now() - started} ms`);
  const dec = await net
    .client('SAE_B')
    .post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200, answered(dec, 'the slave fetches after the restart'));
  t.same(dec.body, enc.body, 'the same keys');
});

t.test('a key whose slave never comes expires at the slave\'s KME, audited, and is gone', async (t) => {
  const since = new Date();
  const enc = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(enc.status, 200, answered(enc, 'a key'));
  const id = enc.body.keys[0].key_ID as string;
  const expired = await eventually(async () => (await events('KME_B', since, ['expire'])).find((e) => e.keys.includes(id)), (TTL_S + 5) * 1000);
  t.ok(expired, 'KME_B expired it');
  t.equal(expired?.actor, 'kme:KME_B');
  const dec = await net.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
  t.equal(dec.status, 400, 'the late slave gets 400 not found');
  const { rows } = await net.kme('KME_B').kms.db.query(`SELECT state FROM qkd_key WHERE key_id = $1`, [id]);
  t.same(rows, [{ state: 'EXPIRED' }]);
});
