import t from 'tap';
import { eventually, NOT_FOUND, sleep } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// Issue 13 item 3: policies per SAE pair, from the config file and from operators, on a real KME over real mutual
// TLS: a pair's keys expire after its own time-to-live (destroyed with an audit event; dec_keys then answers 400 not
// found); below its minimum pool level the KME logs it and status warns; past its keys per minute it answers 503;
// its tags are recorded in the custody events of every key delivered under it.

let k: TestKms;
const operator = () => k.client('OPERATOR_1');

t.before(async () => {
  k = await startTestKms({
    keys: { max_key_count: 200 },
    policies: [{ saes: ['SAE_C', 'SAE_A'], min_pool_keys: 10, tags: { tenant: 'grid', classification: 'secret' } }],
  });
});
t.teardown(() => k?.close());

t.test('the config file seeds a policy; operators list it but change it in the file only', async (t) => {
  const list = await operator().get('/admin/v1/policies');
  t.equal(list.status, 200, answered(list));
  t.match(list.body, { policies: [{ saes: ['SAE_A', 'SAE_C'], min_pool_keys: 10, link_failure: 'fail_closed', tags: { tenant: 'grid' }, source: 'config' }] });
  const shown = await operator().get('/admin/v1/policies/SAE_C/SAE_A');
  t.equal(shown.status, 200, 'either way round');
  const change = await operator().put('/admin/v1/policies/SAE_A/SAE_C', { max_keys_per_minute: 1 });
  t.equal(change.status, 409);
  t.match(change.body.message, /comes from the config file: change it there/);
  t.equal((await k.client('SAE_A').get('/admin/v1/policies')).status, 401, 'an SAE gets 401');
  const self = await operator().put('/admin/v1/policies/SAE_A/SAE_A', {});
  t.equal(self.status, 400);
  const bad = await operator().put('/admin/v1/policies/SAE_A/SAE_B', { max_keys_per_minute: 0 });
  t.equal(bad.status, 400);
  t.match(bad.body.message, /max_keys_per_minute/);
  const badMode = await operator().put('/admin/v1/policies/SAE_A/SAE_B', { link_failure: 'pqc' });
  t.equal(badMode.status, 400);
  t.equal(badMode.body.message, 'link_failure must be one of "fail_closed", "pqc_fallback"');
  t.equal((await operator().get('/admin/v1/policies/SAE_A/SAE_D')).status, 404);
});

t.test("a pair's tags are recorded in the custody events of its keys, at the master's and the slave's side", async (t) => {
  const enc = await k.client('SAE_A').get('/api/v1/keys/SAE_C/enc_keys');
  t.equal(enc.status, 200, answered(enc));
  const keyId = enc.body.keys[0].key_ID;
  t.equal((await k.client('SAE_C').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${keyId}`)).status, 200);
  const { rows } = await k.kms.db.query(`SELECT operation, body::jsonb #> '{detail,tags}' AS tags FROM audit_event WHERE $1::uuid = ANY(key_ids) ORDER BY seq`, [keyId]);
  const tags = { classification: 'secret', tenant: 'grid' };
  t.same(rows.filter((r) => r.operation !== 'destroy'), [
    { operation: 'deliver_master', tags },
    { operation: 'deliver_slave', tags },
  ]);
  const shown = await operator().get(`/admin/v1/keys/${keyId}`);
  t.same(shown.body.tags, tags, 'kms key show names them');
  const other = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  const [untagged] = (await k.kms.db.query(`SELECT body::jsonb #> '{detail,tags}' AS tags FROM audit_event WHERE $1::uuid = ANY(key_ids)`, [other.body.keys[0].key_ID])).rows;
  t.equal(untagged.tags, null, 'a pair without a policy: no tags');
});

t.test("a pair's keys expire after its own time-to-live; the slave then gets 400 not found", async (t) => {
  const set = await operator().put('/admin/v1/policies/SAE_B/SAE_A', { key_ttl_seconds: 1, tags: { asset: 'vpn-1' } });
  t.equal(set.status, 200, answered(set));
  t.match(set.body, { saes: ['SAE_A', 'SAE_B'], key_ttl_seconds: 1, source: 'admin' });
  const enc = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  const keyId = enc.body.keys[0].key_ID;
  const [row] = (await k.kms.db.query(`SELECT extract(epoch from expires_at - created_at) AS ttl FROM qkd_key WHERE key_id = $1`, [keyId])).rows;
  t.ok(Number(row.ttl) <= 1.5, `expires a second after it was made (${row.ttl} s)`);
  const expired = await eventually(async () => (await k.kms.db.query(`SELECT 1 FROM audit_event WHERE operation = 'expire' AND $1::uuid = ANY(key_ids)`, [keyId])).rows.length > 0, 5_000);
  t.ok(expired, 'destroyed by the expiry job, with an audit event');
  const dec = await k.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${keyId}`);
  t.equal(dec.status, 400);
  t.equal(dec.body.message, NOT_FOUND);
  const other = await k.client('SAE_A').get('/api/v1/keys/SAE_D/enc_keys');
  const [def] = (await k.kms.db.query(`SELECT extract(epoch from expires_at - created_at) AS ttl FROM qkd_key WHERE key_id = $1`, [other.body.keys[0].key_ID])).rows;
  t.equal(Math.round(Number(def.ttl)), 300, "another pair keeps the KME's default");
});

t.test('past its keys per minute a pair gets a 503 with an Error body; other pairs are not held back', async (t) => {
  t.equal((await operator().put('/admin/v1/policies/SAE_A/SAE_D', { max_keys_per_minute: 5 })).status, 200);
  const a = k.client('SAE_A');
  t.equal((await a.post('/api/v1/keys/SAE_D/enc_keys', { number: 3 })).status, 200);
  const over = await a.post('/api/v1/keys/SAE_D/enc_keys', { number: 3 });
  t.equal(over.status, 503, 'three more would make six');
  t.match(over.body.message, /the policy of SAE_A and SAE_D allows 5 keys a minute at this KME; 3 were taken in the last minute: try again in \d+ s/);
  t.equal((await a.post('/api/v1/keys/SAE_D/enc_keys', { number: 2 })).status, 200, 'two more make five');
  t.equal((await a.get('/api/v1/keys/SAE_D/enc_keys')).status, 503, 'the sixth is refused');
  t.equal((await k.client('SAE_D').get('/api/v1/keys/SAE_A/enc_keys')).status, 503, 'the pair holds either way round');
  t.equal((await a.get('/api/v1/keys/SAE_B/enc_keys')).status, 200, 'another pair is not held back');
  const deleted = await operator().delete('/admin/v1/policies/SAE_D/SAE_A');
  t.equal(deleted.status, 200, answered(deleted));
  t.equal((await a.get('/api/v1/keys/SAE_D/enc_keys')).status, 200, 'policy deleted: no limit');
});

t.test('below the minimum pool level: a log line, and a warning in status', async (t) => {
  // Empty the pool SAE_A and SAE_C draw from (the loopback link), faster than the 50 Mbit/s simulator refills it:
  // suspend its device reading by draining it.
  t.equal((await operator().post('/admin/v1/pools/KME_T-loopback/drain', {})).status, 200);
  const a = k.client('SAE_A');
  for (let i = 0; i < 30; i++) {
    const left = (await a.get('/api/v1/keys/SAE_C/status')).body.stored_key_count as number;
    if (left < 10) break;
    await a.post('/api/v1/keys/SAE_B/enc_keys', { number: Math.min(128, left - 5) });
  }
  const status = await a.get('/api/v1/keys/SAE_C/status');
  t.ok(status.body.stored_key_count < 10, `pool below 10 (${status.body.stored_key_count})`);
  t.match(status.body.status_extension.qkms_warnings, [/below the minimum of 10 the policy of SAE_A and SAE_C sets/]);
  t.ok(await eventually(async () => /key pool below the minimum the policy of this SAE pair sets/.test(k.logs()), 5_000), 'a log line');
  t.equal((await operator().post('/admin/v1/pools/KME_T-loopback/resume', {})).status, 200);
  await sleep(10);
});

t.test("a pair's link_failure: fail_closed unless set, pqc_fallback when set, in the answers and the custody event", async (t) => {
  const set = await operator().put('/admin/v1/policies/SAE_C/SAE_B', { link_failure: 'pqc_fallback' });
  t.equal(set.status, 200, answered(set));
  t.match(set.body, { saes: ['SAE_B', 'SAE_C'], link_failure: 'pqc_fallback', source: 'admin' });
  t.equal((await operator().get('/admin/v1/policies/SAE_B/SAE_C')).body.link_failure, 'pqc_fallback');
  const [event] = (await k.kms.db.query(`SELECT body::jsonb -> 'detail' AS d FROM audit_event WHERE operation = 'policy' ORDER BY seq DESC LIMIT 1`)).rows;
  t.same(event.d, { change: 'set', saes: ['SAE_B', 'SAE_C'], link_failure: 'pqc_fallback', tags: {}, source: 'admin' });
  const back = await operator().put('/admin/v1/policies/SAE_B/SAE_C', {});
  t.equal(back.body.link_failure, 'fail_closed', 'a policy that leaves it out fails closed');
  t.equal((await operator().delete('/admin/v1/policies/SAE_B/SAE_C')).status, 200);
});

t.test('every policy change is a custody event', async (t) => {
  const { rows } = await k.kms.db.query(`SELECT actor, body::jsonb -> 'detail' AS d FROM audit_event WHERE operation = 'policy' ORDER BY seq`);
  t.same(
    rows.map((r) => [r.actor, r.d.change, r.d.saes.join('/'), r.d.source]),
    [
      ['kme:KME_T', 'set', 'SAE_A/SAE_C', 'config'],
      ['operator:OPERATOR_1', 'set', 'SAE_A/SAE_B', 'admin'],
      ['operator:OPERATOR_1', 'set', 'SAE_A/SAE_D', 'admin'],
      ['operator:OPERATOR_1', 'delete', 'SAE_A/SAE_D', 'admin'],
      ['operator:OPERATOR_1', 'set', 'SAE_B/SAE_C', 'admin'],
      ['operator:OPERATOR_1', 'update', 'SAE_B/SAE_C', 'admin'],
      ['operator:OPERATOR_1', 'delete', 'SAE_B/SAE_C', 'admin'],
    ],
  );
  t.same(
    rows.filter((r) => r.d.change !== 'delete').map((r) => r.d.link_failure),
    ['fail_closed', 'fail_closed', 'fail_closed', 'pqc_fallback', 'fail_closed'],
    'every set and update names what the pair does when its link fails',
  );
});
