import t from 'tap';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { REDIS_URL, redisSkipReason, uniquePrefix } from '../helpers/redis.js';
import { answered } from '../helpers/client.js';

// Issue 15 item 1: two replicas of one KME (two KME servers in this process) on one database, one KEK and the
// machine's Redis. An operator's change at one replica reaches the other at once through Redis (well inside its
// 500 ms poll); keys per minute of a policy and the per-SAE request limit are counted for the KME as a whole; the
// readiness probe names Redis. (test/coord/replicas-process.test.ts kills and restarts real processes.)
const skip = (await redisSkipReason()) ?? false;
if (skip) t.comment(`replica tests skipped: ${skip}`);

t.test('two replicas on one database and one Redis', { skip }, async (t) => {
  process.env.KMS_TEST_REDIS_URL = REDIS_URL;
  const coordination = { redis: { url_env: 'KMS_TEST_REDIS_URL', key_prefix: uniquePrefix() } };
  const requests = { per_sae: { max: 40, window_ms: 60_000 } };
  const ops = { listen: { host: '127.0.0.1', port: 0 } };
  const a: TestKms = await startTestKms({ coordination, requests, ops, keys: { max_key_count: 400 } });
  t.teardown(() => a.close());
  const b: TestKms = await startTestKms({ coordination, requests, ops, wrapper: a.wrapper, databaseUrl: a.db.url, fill: false });
  t.teardown(() => b.close());

  const ready = await (await fetch(`${b.kms.opsUrl}/readyz`)).json();
  t.same(ready.checks, { database: 'ok', hsm: 'ok', redis: 'ok' }, 'readiness checks Redis too');

  // Keys made at replica a are fetched at replica b: one KME.
  const enc = await a.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(enc.status, 200, answered(enc));
  const dec = await b.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.same(dec.body.keys, enc.body.keys, 'a key from replica a is fetched at replica b');

  // A suspension at replica a stops SAE_D at replica b within 150 ms: the message, not the poll.
  const bSaeD = b.client('SAE_D');
  t.equal((await bSaeD.get('/api/v1/keys/SAE_A/status')).status, 200);
  const suspended = await a.client('OPERATOR_1').post('/admin/v1/saes/SAE_D/suspend', { reason: 'replica test' });
  t.equal(suspended.status, 200, answered(suspended));
  const since = Date.now();
  let status = 200;
  while (status === 200 && Date.now() - since < 2_000) status = (await bSaeD.get('/api/v1/keys/SAE_A/status')).status;
  const tookMs = Date.now() - since;
  t.equal(status, 401, 'replica b refuses the suspended SAE');
  t.ok(tookMs < 150, `within ${tookMs} ms of the answer at replica a`);

  // A policy set at replica b limits keys per minute at both, counted together.
  const set = await b.client('OPERATOR_1').put('/admin/v1/policies/SAE_A/SAE_C', { max_keys_per_minute: 5 });
  t.equal(set.status, 200, answered(set));
  await new Promise((r) => setTimeout(r, 100));
  t.equal((await a.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys?number=3')).status, 200, '3 at replica a');
  t.equal((await b.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys?number=2')).status, 200, '2 at replica b');
  const over = await a.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys');
  t.equal(over.status, 503);
  t.match(over.body?.message, /allows 5 keys a minute at this KME; 5 were taken in the last minute/, 'the sixth is refused, counted across replicas');

  // The request limit per SAE (40 a minute), counted across replicas: SAE_B has made 2 (status aside, dec_keys above).
  const bClient = b.client('SAE_B');
  const aClient = a.client('SAE_B');
  const answers: number[] = [];
  for (let i = 0; i < 50; i++) answers.push((await (i % 2 ? aClient : bClient).get('/api/v1/keys/SAE_A/status')).status);
  const firstRefused = answers.indexOf(503);
  t.equal(firstRefused, 39, `SAE_B's 41st request of the minute is the first refused (it had made 1 before): ${answers.join(',')}`);
  const refused = await aClient.get('/api/v1/keys/SAE_A/status');
  t.equal(refused.status, 503);
  t.match(refused.body, { message: /this SAE made more than 40 requests in 60 s at this KME: try again in \d+ s/ }, 'an ETSI Error body');
  t.ok(Number(refused.headers['retry-after']) > 0, 'and Retry-After');
  t.equal((await a.client('SAE_A').get('/api/v1/keys/SAE_B/status')).status, 200, 'another SAE is not limited by it');
});
