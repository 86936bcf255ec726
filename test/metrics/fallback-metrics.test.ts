import t from 'tap';
import { canDrillOutage } from '../../src/sources/link-source.js';
import { startTestKms } from '../helpers/kms.js';
import { scrape, valueOf } from '../helpers/metrics.js';
import { answered } from '../helpers/client.js';

// Issue 15 item 2: fallback keys in GET /metrics. One KME, its loopback link cut (the simulator's outage drill) and
// its pool drained; the pair SAE_A → SAE_B allows the post-quantum fallback (as in test/network/link-fallback.test.ts,
// here with both SAEs at one KME), so its next keys are fallback keys: counted per pair, the link marked in fallback.

const LINK = 'KME_T-loopback';

t.test('fallback keys are counted per pair and the link shows in fallback', async (t) => {
  const k = await startTestKms({
    ops: { listen: { host: '127.0.0.1', port: 0 } },
    keys: { max_key_count: 40 },
    policies: [{ saes: ['SAE_A', 'SAE_B'], link_failure: 'pqc_fallback' }],
  });
  t.teardown(() => k.close());
  const ops = k.kms.opsUrl!;
  const a = k.client('SAE_A');
  const source = k.kms.sources.get(LINK)!;
  if (!canDrillOutage(source)) throw new Error('the test link is simulated and can be cut');
  source.outage(60_000);

  // Drain the pool through the fail-closed pair SAE_C → SAE_D: QKD keys only.
  let qkd = 0;
  for (let i = 0; i < 100; i++) {
    const res = await k.client('SAE_C').post('/api/v1/keys/SAE_D/enc_keys', { number: 8 });
    if (res.status !== 200) break;
    qkd += res.body.keys.length;
  }
  for (let i = 0; i < 50; i++) {
    const res = await k.client('SAE_C').get('/api/v1/keys/SAE_D/enc_keys');
    if (res.status !== 200) break;
    qkd++;
  }
  t.ok(qkd > 0, `${qkd} QKD keys drained`);

  const before = await scrape(ops);
  t.equal(valueOf(before, 'qkms_link_in_fallback', { link_id: LINK }), 0, 'not in fallback before a fallback key');
  t.equal(valueOf(before, 'qkms_pool_available_keys', { link_id: LINK }), 0, 'the pool is empty');
  let fallback = 0;
  for (const body of [{}, { number: 3 }]) {
    const res = await a.post('/api/v1/keys/SAE_B/enc_keys', body);
    t.equal(res.status, 200, answered(res, 'a fallback key'));
    t.same(res.body.key_container_extension, { qkms_key_origin: 'pqc_fallback' });
    fallback += res.body.keys?.length ?? 0;
  }
  const s = await scrape(ops);
  t.equal(valueOf(s, 'qkms_fallback_keys_delivered_total', { master_sae: 'SAE_A', slave_sae: 'SAE_B' }), fallback, `${fallback} fallback keys for the pair`);
  t.equal(valueOf(s, 'qkms_fallback_keys_delivered_total', { master_sae: 'SAE_C' }), undefined, 'none for the fail-closed pair');
  t.equal(valueOf(s, 'qkms_link_in_fallback', { link_id: LINK }), 1, 'the link is in fallback');
  t.equal(valueOf(s, 'qkms_keys_delivered_total', { operation: 'enc_keys', master_sae: 'SAE_A', slave_sae: 'SAE_B' }), fallback, 'fallback keys are delivered keys too');
  t.equal(valueOf(s, 'qkms_keys_delivered_total', { operation: 'enc_keys', master_sae: 'SAE_C', slave_sae: 'SAE_D' }), qkd);
  t.equal(valueOf(s, 'qkms_refusals_total', { operation: 'enc_keys', caller: 'sae:SAE_C', reason: 'no_key_material' }), 2, 'the drain ended twice on an empty pool');
  t.equal(valueOf(s, 'qkms_link_up', { link_id: LINK }), 0, 'the link is down');
});
