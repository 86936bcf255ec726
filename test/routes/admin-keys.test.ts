import { randomUUID } from 'node:crypto';
import t from 'tap';
import { LifecycleReplay } from '../../src/audit/lifecycle-replay.js';
import { sleep } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// Issue 13 item 2 (keys): the admin API's keys over real mutual TLS on a real database. An operator suspends,
// resumes, revokes as compromised and destroys keys; the slaves' dec_keys sees each change at once; a revocation names
// every SAE that received the keys; "which keys did SAE X receive since T" and "which SAEs hold keys from link L since
// T" come from the custody log; every change is a custody event that the verifier's lifecycle replay accepts.

let k: TestKms;
const operator = () => k.client('OPERATOR_1');
const LINK = 'KME_T-loopback';

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 200 } });
});
t.teardown(() => k?.close());

/** A key SAE_A gets for slave SAE_B (and, with `also`, additional slaves). */
async function newKey(also: string[] = []): Promise<string> {
  const res = also.length
    ? await k.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', { number: 1, additional_slave_SAE_IDs: also })
    : await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  if (res.status !== 200) throw new Error(`enc_keys: ${res.status} ${res.text}`);
  return (res.body as { keys: Array<{ key_ID: string }> }).keys[0]!.key_ID;
}

const fetch = (sae: string, keyId: string) => k.client(sae).get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${keyId}`);

async function change(op: string, keyIds: string[], reason?: string) {
  const res = await operator().post(`/admin/v1/keys/${op}`, { key_ids: keyIds, ...(reason ? { reason } : {}) });
  if (res.status !== 200) throw new Error(`${op}: ${res.status} ${res.text}`);
  return res.body as { changed: string[]; erased: string[]; unchanged: Array<{ key_ID: string; why: string }>; holders?: Array<{ key_ID: string; sae_id: string; as: string }> };
}

t.test('only operators get in; bad input is refused with the field named', async (t) => {
  for (const who of ['SAE_A', 'AUDITOR_1', 'SAE_X']) {
    const res = await k.client(who).post('/admin/v1/keys/revoke', { key_ids: [randomUUID()] });
    t.equal(res.status, 401, `${who} gets 401`);
  }
  const bad = await operator().post('/admin/v1/keys/revoke', { key_ids: ['not-a-uuid'] });
  t.equal(bad.status, 400);
  t.match(bad.body?.message, /key_ids/);
  const none = await operator().post('/admin/v1/keys/suspend', { key_ids: [] });
  t.equal(none.status, 400, 'at least one key');
  const unknown = await operator().get(`/admin/v1/keys/${randomUUID()}`);
  t.equal(unknown.status, 404);
  t.match(unknown.body?.message, /is not known at this KME/);
  const since = await operator().get('/admin/v1/saes/SAE_A/keys?since=yesterday');
  t.equal(since.status, 400);
  t.match(since.body?.message, /since/);
  const link = await operator().get(`/admin/v1/links/NO-LINK/holders?since=${new Date().toISOString()}`);
  t.equal(link.status, 404);
});

t.test('a suspended key goes to no slave until resumed; its state is shown; ended keys cannot be suspended', async (t) => {
  const key = await newKey();
  const held = await change('suspend', [key], 'investigating');
  t.same(held.changed, [key]);
  const refused = await fetch('SAE_B', key);
  t.equal(refused.status, 400, 'the slave is refused while the key is held');
  t.match(refused.body?.message, /suspended by an operator/);
  t.same(refused.body?.details, [{ key_ID: key }]);
  t.same((await change('suspend', [key])).unchanged, [{ key_ID: key, why: 'already suspended' }]);
  const shown = await operator().get(`/admin/v1/keys/${key}`);
  t.equal(shown.status, 200, answered(shown));
  t.match(shown.body, { key_ID: key, state: 'DELIVERED', suspended: true, link_id: LINK, master_SAE_ID: 'SAE_A', slaves: ['SAE_B'] });
  t.match((shown.body as { custody: Array<{ operation: string; actor: string }> }).custody.map((s) => [s.operation, s.actor]), [
    ['deliver_master', 'sae:SAE_A'],
    ['suspend', 'operator:OPERATOR_1'],
  ]);
  t.same((await change('resume', [key])).changed, [key]);
  t.equal((await fetch('SAE_B', key)).status, 200, 'resumed: the slave gets it');
  t.same((await change('suspend', [key])).unchanged, [{ key_ID: key, why: 'already ended (DESTROYED)' }]);
});

t.test('a revocation erases what is left, names every SAE that received the keys, and records ended keys too', async (t) => {
  const fetched = await newKey(['SAE_C']);
  t.equal((await fetch('SAE_B', fetched)).status, 200);
  t.equal((await fetch('SAE_C', fetched)).status, 200, 'both slaves have it: ended');
  const waiting = await newKey(['SAE_C']);
  t.equal((await fetch('SAE_C', waiting)).status, 200, 'SAE_C has it, SAE_B does not yet');
  const stranger = randomUUID();
  const r = await change('revoke', [fetched, waiting, stranger], 'SAE_A compromised');
  t.same(r.changed.sort(), [fetched, waiting].sort(), 'both keys recorded as compromised');
  t.same(r.erased, [waiting], 'material left only for the key SAE_B still waited for');
  t.same(r.unchanged, [{ key_ID: stranger, why: 'not known at this KME' }]);
  t.same(
    r.holders!.map((h) => `${h.key_ID === fetched ? 'fetched' : 'waiting'} ${h.sae_id} ${h.as}`).sort(),
    ['fetched SAE_A master', 'fetched SAE_B slave', 'fetched SAE_C slave', 'waiting SAE_A master', 'waiting SAE_C slave'],
  );
  const late = await fetch('SAE_B', waiting);
  t.equal(late.status, 400, 'the slave still waiting gets 400 not found');
  t.match(late.body?.message, /not found/);
  const [row] = (await k.kms.db.query(`SELECT state, wrapped, destroyed_at FROM qkd_key WHERE key_id = $1`, [waiting])).rows;
  t.match(row, { state: 'COMPROMISED', wrapped: null }, 'material gone from the row');
  t.ok(row.destroyed_at, 'with its time of death (compacted like any ended key)');
  const { rows: events } = await k.kms.db.query(`SELECT actor, key_ids::text[] AS ids, body::jsonb -> 'detail' AS detail FROM audit_event WHERE operation = 'revoke'`);
  t.equal(events.length, 1, 'one custody event for the revocation');
  t.match(events[0], { actor: 'operator:OPERATOR_1', detail: { reason: 'SAE_A compromised', erased: [waiting], holders: ['SAE_A', 'SAE_B', 'SAE_C'] } });
  t.same([...events[0].ids].sort(), [fetched, waiting].sort());
  const shown = await operator().get(`/admin/v1/keys/${waiting}`);
  t.match(shown.body, { state: 'COMPROMISED', suspended: false });
});

t.test('destroy ends a live key; slaves get 400 not found', async (t) => {
  const key = await newKey();
  const r = await change('destroy', [key], 'decommissioning');
  t.same(r.changed, [key]);
  t.same(r.erased, [key]);
  t.equal((await fetch('SAE_B', key)).status, 400);
  t.same((await change('destroy', [key])).unchanged, [{ key_ID: key, why: 'already ended (DESTROYED)' }]);
});

t.test('which keys did SAE X receive since T, and which SAEs hold keys from link L since T', async (t) => {
  await sleep(5); // the earlier tests' keys are older than `since`
  const since = new Date().toISOString();
  const keys = [await newKey(), await newKey(), await newKey()];
  t.equal((await fetch('SAE_B', keys[0]!)).status, 200);
  const asMaster = await operator().get(`/admin/v1/saes/SAE_A/keys?since=${since}`);
  t.equal(asMaster.status, 200, answered(asMaster));
  const got = (asMaster.body as { keys: Array<{ key_ID: string; as: string; link_id: string }> }).keys;
  t.same(got.map((x) => [x.key_ID, x.as, x.link_id]), keys.map((id) => [id, 'master', LINK]), 'the three keys, in order, with their link');
  const asSlave = await operator().get(`/admin/v1/saes/SAE_B/keys?since=${since}`);
  t.same((asSlave.body as { keys: Array<{ key_ID: string; as: string; link_id: string }> }).keys.map((x) => [x.key_ID, x.as, x.link_id]), [[keys[0], 'slave', LINK]], "a slave's key names its link too");
  const page = await operator().get(`/admin/v1/saes/SAE_A/keys?since=${since}&limit=2`);
  const first = page.body as { keys: Array<{ key_ID: string }>; next_after_seq: number };
  t.same(first.keys.map((x) => x.key_ID), keys.slice(0, 2));
  const rest = await operator().get(`/admin/v1/saes/SAE_A/keys?since=${since}&limit=2&after_seq=${first.next_after_seq}`);
  t.same((rest.body as { keys: Array<{ key_ID: string }> }).keys.map((x) => x.key_ID), keys.slice(2), 'the next page');
  const future = await operator().get(`/admin/v1/saes/SAE_A/keys?since=${new Date(Date.now() + 60_000).toISOString()}`);
  t.same((future.body as { keys: unknown[] }).keys, [], 'nothing since a time to come');
  const backwards = await operator().get(`/admin/v1/saes/SAE_A/keys?since=${since}&until=${since}`);
  t.equal(backwards.status, 400);

  const holders = await operator().get(`/admin/v1/links/${LINK}/holders?since=${since}`);
  t.equal(holders.status, 200, answered(holders));
  t.same(
    (holders.body as { holders: Array<{ sae_id: string; as: string; keys: number }> }).holders.map((h) => [h.sae_id, h.as, h.keys]),
    [['SAE_A', 'master', 3], ['SAE_B', 'slave', 1]],
  );
});

t.test("the verifier's lifecycle replay accepts every operator change in this KME's log", async (t) => {
  const { rows } = await k.kms.db.query(`SELECT seq, body FROM audit_event ORDER BY seq`);
  const replay = new LifecycleReplay(false);
  const problems = rows.map((r) => replay.apply(Number(r.seq), JSON.parse(r.body))).filter(Boolean);
  t.same(problems, []);
  t.ok(rows.some((r) => /"operation":"suspend"/.test(r.body)) && rows.some((r) => /"operation":"revoke"/.test(r.body)), 'the log holds the changes');
});
