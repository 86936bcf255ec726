import t from 'tap';
import { eventually, NOT_FOUND } from '../helpers/etsi.js';
import { PAIR, startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { answered } from '../helpers/client.js';

// Issue 13 items 2, 5 (KEK rotation across KMEs) and 6 (a TLS reload's peer clients).
// Keys across KMEs: a key revoked or destroyed by an operator at the master's KME is voided at the
// slave's KME too (the slave gets 400 not found there); the slave's KME answers for its own SAEs ("which keys did
// SAE_B receive", with the link its copy came over) and names them as holders when it revokes.

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({
    ...PAIR,
    fill: 100,
  });
});
t.teardown(() => net?.close());

const operatorAt = (kme: string) => net.client('OPERATOR_1', kme);

async function keyForB(): Promise<string> {
  const res = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  if (res.status !== 200) throw new Error(`enc_keys: ${res.status} ${res.text}`);
  return res.body.keys[0].key_ID as string;
}

for (const op of ['revoke', 'destroy'] as const) {
  t.test(`${op} at the master's KME: the slave's KME voids its copy`, async (t) => {
    const key = await keyForB();
    const res = await operatorAt('KME_A').post(`/admin/v1/keys/${op}`, { key_ids: [key], reason: `${op} across KMEs` });
    t.equal(res.status, 200, answered(res));
    // The origin keeps no copy once the master has the key (destroy finds it ended here); the slave's KME does.
    t.same(res.body.changed, op === 'revoke' ? [key] : []);
    t.same(res.body.voided_at, ['KME_B'], 'the slave\'s KME is asked to void it');
    const voided = await eventually(async () => {
      const [row] = await net.kme('KME_B').query(`SELECT state FROM qkd_key WHERE key_id = $1`, [key]);
      return row?.state === 'DESTROYED';
    }, 5_000);
    t.ok(voided, "KME_B's copy destroyed");
    const dec = await net.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${key}`);
    t.equal(dec.status, 400);
    t.equal(dec.body.message, NOT_FOUND, 'SAE_B gets nothing at its own KME');
    const [event] = await net.kme('KME_B').query(`SELECT actor, body::jsonb #>> '{detail,reason}' AS reason FROM audit_event WHERE operation = 'void' AND $1::uuid = ANY(key_ids)`, [key]);
    t.match(event, { actor: 'kme:KME_A', reason: new RegExp(`by operator:OPERATOR_1 at KME_A: ${op} across KMEs`) }, "KME_B's custody log says who and why");
  });
}

t.test("the slave's KME answers for its own SAEs and names them when it revokes", async (t) => {
  const since = new Date(Date.now() - 60_000).toISOString();
  const key = await keyForB();
  t.equal((await net.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${key}`)).status, 200);
  const received = await operatorAt('KME_B').get(`/admin/v1/saes/SAE_B/keys?since=${since}`);
  t.equal(received.status, 200, answered(received));
  t.same(received.body.keys.map((k: { key_ID: string; as: string; link_id: string }) => [k.key_ID, k.as, k.link_id]), [[key, 'slave', 'A-B']]);
  const revoked = await operatorAt('KME_B').post('/admin/v1/keys/revoke', { key_ids: [key] });
  t.equal(revoked.status, 200, answered(revoked));
  t.same(revoked.body.holders.map((h: { sae_id: string; as: string }) => [h.sae_id, h.as]), [['SAE_B', 'slave']], 'KME_B knows its own slave; KME_A knows the master');
  const atA = await operatorAt('KME_A').get(`/admin/v1/keys/${key}`);
  t.equal(atA.status, 200, answered(atA));
  t.same(atA.body.holders.map((h: { sae_id: string; as: string }) => [h.sae_id, h.as]), [['SAE_A', 'master']]);
});

t.test('after a TLS reload the KME still reaches its peer (its peer clients take the reloaded material)', async (t) => {
  const view = await net.kme('KME_A').kms.reloadTls('test');
  t.equal(view.trust.reloads, 1);
  const key = await keyForB();
  const dec = await net.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${key}`);
  t.equal(dec.status, 200, 'a cross-KME key after the reload');
});

t.test("a slave suspended at its own KME gets no reservation there: the master's request fails and takes nothing", async (t) => {
  t.equal((await operatorAt('KME_B').post('/admin/v1/saes/SAE_B/suspend', { reason: 'maintenance' })).status, 200);
  const refused = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.not(refused.status, 200, 'no key for a suspended slave');
  t.match(refused.body.message, /slave SAE SAE_B is suspended by an operator/, `the reason reaches the master (${refused.status})`);
  const [reserved] = await net.kme('KME_B').query(`SELECT count(*)::int AS n FROM qkd_key WHERE state = 'RESERVED'`);
  t.equal(reserved!.n, 0, 'nothing reserved at KME_B');
  t.equal((await operatorAt('KME_B').post('/admin/v1/saes/SAE_B/resume', {})).status, 200);
  t.equal((await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys')).status, 200, 'resumed: keys again');
});

t.test('KEK rotation at both KMEs under load: every key the master got is what the slave gets from its own KME', async (t) => {
  let done = false;
  const got: Array<{ key_ID: string; key: string }> = [];
  const failures: string[] = [];
  const load = Promise.all(
    [0, 1, 2].map(async () => {
      const a = net.client('SAE_A');
      while (!done) {
        const res = await a.post('/api/v1/keys/SAE_B/enc_keys', { number: 4 });
        if (res.status === 200) got.push(...res.body.keys);
        else if (res.status !== 503) failures.push(`${res.status} ${res.text}`);
      }
    }),
  );
  await new Promise((r) => setTimeout(r, 300));
  for (const kme of ['KME_A', 'KME_B']) {
    const res = await operatorAt(kme).post('/admin/v1/kek/rotate', { reason: 'rotation under load' });
    t.equal(res.status, 200, answered(res, kme));
  }
  await new Promise((r) => setTimeout(r, 700));
  done = true;
  await load;
  t.same(failures, [], 'no request failed across the rotations');
  for (const kme of ['KME_A', 'KME_B']) {
    const settled = await eventually(async () => {
      const s = (await operatorAt(kme).get('/admin/v1/kek')).body;
      return s.current === 2 && s.rewrap_pending === 0 && s.versions.every((v: { version: number; in_hsm: boolean }) => v.version === 2 || !v.in_hsm);
    }, 20_000, 100);
    t.ok(settled, `${kme}: everything re-wrapped under version 2, version 1 destroyed`);
  }
  t.ok(got.length > 0, `${got.length} keys delivered across the rotations`);
  const fetched: Array<{ key_ID: string; key: string }> = [];
  for (let i = 0; i < got.length; i += 128) {
    const res = await net.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: got.slice(i, i + 128).map((k) => ({ key_ID: k.key_ID })) });
    t.equal(res.status, 200, answered(res));
    fetched.push(...(res.body?.keys ?? []));
  }
  t.same(fetched, got, "KME_B's copies, re-wrapped under its new KEK, are exactly what KME_A handed out");
});

t.test("a pair's time-to-live longer than the default holds at the slave's KME too when its policy there says so", async (t) => {
  for (const kme of ['KME_A', 'KME_B']) {
    t.equal((await operatorAt(kme).put('/admin/v1/policies/SAE_A/SAE_B', { key_ttl_seconds: 900 })).status, 200, kme);
  }
  const key = await keyForB();
  const [row] = await net.kme('KME_B').query(`SELECT extract(epoch from expires_at - created_at)::int AS ttl FROM qkd_key WHERE key_id = $1`, [key]);
  t.ok(row!.ttl > 850, `KME_B keeps the copy for the pair's 900 s (${row!.ttl} s), beyond its default of 300 s`);
  for (const kme of ['KME_A', 'KME_B']) await operatorAt(kme).delete('/admin/v1/policies/SAE_A/SAE_B');
  const other = await keyForB();
  const [capped] = await net.kme('KME_B').query(`SELECT extract(epoch from expires_at - created_at)::int AS ttl FROM qkd_key WHERE key_id = $1`, [other]);
  t.ok(capped!.ttl <= 301, `without the policy: the default (${capped!.ttl} s)`);
});
