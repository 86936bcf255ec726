import t from 'tap';
import { eventually } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// Issue 13 item 2 (pools): a pool is one link's material at this KME. An operator suspends it (keys get 503 at once,
// status shows nothing to take), drains it (keys still served, the device no longer read), schedules its deletion
// (cancellable, back to suspended only) and lets it run out (its unbound material destroyed, audited, final). Real
// mutual TLS, real database.

let k: TestKms;
const operator = () => k.client('OPERATOR_1');
const LINK = 'KME_T-loopback';
const enc = () => k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 300 }, rate: 1_000_000, admin: { min_pool_deletion_wait_seconds: 1 } });
});
t.teardown(() => k?.close());

async function change(path: string, body: object = {}) {
  return operator().post(`/admin/v1/pools/${LINK}/${path}`, body);
}

const available = async () => Number((await k.kms.db.query(`SELECT sum(available)::int AS n FROM pool_count WHERE link_id = $1`, [LINK])).rows[0].n);

t.test('list and show; only operators; unknown links and bad moves are refused with the reason', async (t) => {
  const list = await operator().get('/admin/v1/pools');
  t.equal(list.status, 200, answered(list));
  t.match(list.body, { pools: [{ link_id: LINK, state: 'active', role: 'loopback', hands_out: true, ingests: true, block_bits: 256 }] });
  t.equal((await k.client('SAE_A').get('/admin/v1/pools')).status, 401, 'an SAE gets 401');
  t.equal((await operator().get('/admin/v1/pools/NO-LINK')).status, 404);
  const resume = await change('resume');
  t.equal(resume.status, 409, 'resume an active pool');
  t.match(resume.body.message, /is active: resume is allowed from suspended, draining only/);
  const cancel = await change('cancel-deletion');
  t.equal(cancel.status, 409);
  const tooSoon = await change('schedule-deletion', { wait_seconds: 0 });
  t.equal(tooSoon.status, 400, 'a waiting period below the minimum');
  t.match(tooSoon.body.message, /wait_seconds/);
});

t.test('a suspended pool gives no keys (503 at once) and says so in status; resumed, it does', async (t) => {
  t.equal((await enc()).status, 200);
  const res = await change('suspend', { reason: 'link under investigation' });
  t.equal(res.status, 200, answered(res));
  t.match(res.body, { state: 'suspended', hands_out: false, ingests: true });
  const refused = await enc();
  t.equal(refused.status, 503);
  t.match(refused.body.message, new RegExp(`key pool of link ${LINK} is suspended by an operator`));
  const status = await k.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.equal(status.body.stored_key_count, 0, 'status: nothing to take');
  t.same(status.body.status_extension.qkms_pool_held, [{ link_id: LINK, state: 'suspended' }]);
  t.equal((await change('resume')).status, 200);
  t.equal((await enc()).status, 200, 'resumed');
});

t.test('a draining pool still serves keys but stops reading its device', async (t) => {
  const res = await change('drain');
  t.match(res.body, { state: 'draining', hands_out: true, ingests: false });
  // A batch the ingester took from its device before the drain may still land: wait until the pool holds still.
  let before = await available();
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const now = await available();
    if (now === before) break;
    before = now;
  }
  t.equal((await enc()).status, 200);
  await new Promise((r) => setTimeout(r, 1_500)); // the 1 Mbit/s device would have brought ~5,000 blocks
  t.equal(await available(), before - 1, 'one key out, nothing in');
  t.equal((await change('resume')).status, 200);
  t.ok(await eventually(async () => (await available()) > before - 1, 5_000), 'resumed: the device is read again (refilling the key taken)');
});

t.test('a scheduled deletion can be cancelled (back to suspended), and when due destroys the unbound material for good', async (t) => {
  const scheduled = await change('schedule-deletion', { wait_seconds: 3600, reason: 'decommissioning the link' });
  t.equal(scheduled.status, 200, answered(scheduled));
  t.match(scheduled.body, { state: 'pending_deletion', hands_out: false, ingests: false });
  t.ok(Date.parse(scheduled.body.delete_at) > Date.now() + 3_500_000, 'delete_at an hour away');
  t.equal((await enc()).status, 503, 'no keys while the deletion is pending');
  const cancelled = await change('cancel-deletion');
  t.match(cancelled.body, { state: 'suspended' }, 'cancelled: suspended, not active');

  // A key a slave still waits for survives the deletion; free material does not.
  t.equal((await change('resume')).status, 200);
  const waiting = (await enc()).body.keys[0].key_ID as string;
  t.equal((await change('schedule-deletion', { wait_seconds: 1 })).status, 200);
  t.ok(await eventually(async () => (await operator().get(`/admin/v1/pools/${LINK}`)).body.state === 'deleted', 10_000), 'deleted when due');
  t.equal(await available(), 0, 'no free material left');
  const [chunks] = (await k.kms.db.query(`SELECT count(*)::int AS n FROM key_chunk WHERE link_id = $1 AND next_free < blocks`, [LINK])).rows;
  t.equal(chunks.n, 0, 'every position taken or gone');
  const dec = await k.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${waiting}`);
  t.equal(dec.status, 200, 'the bound key is still delivered');
  const { rows: events } = await k.kms.db.query(`SELECT actor, body::jsonb -> 'detail' AS d FROM audit_event WHERE operation = 'pool' ORDER BY seq`);
  t.same(
    events.map((e) => [e.actor, e.d.change, e.d.to]),
    [
      ['operator:OPERATOR_1', 'suspend', 'suspended'],
      ['operator:OPERATOR_1', 'resume', 'active'],
      ['operator:OPERATOR_1', 'drain', 'draining'],
      ['operator:OPERATOR_1', 'resume', 'active'],
      ['operator:OPERATOR_1', 'schedule_deletion', 'pending_deletion'],
      ['operator:OPERATOR_1', 'cancel_deletion', 'suspended'],
      ['operator:OPERATOR_1', 'resume', 'active'],
      ['operator:OPERATOR_1', 'schedule_deletion', 'pending_deletion'],
      ['kme:KME_T', 'delete', 'deleted'],
    ],
    'every move is a custody event',
  );
  t.ok(events.at(-1).d.blocks_destroyed > 0, 'the deletion says how much it destroyed');
  t.equal((await change('resume')).status, 409, 'deleted is final');
  await t.rejects(k.kms.db.query(`UPDATE link SET pool_state = 'active' WHERE link_id = $1`, [LINK]), /was deleted: that is final/, 'the table refuses it too');
});
