import t from 'tap';
import { scrape, valueOf } from '../helpers/metrics.js';
import { startTestNetwork, type TestNetwork } from '../helpers/network.js';

// Issue 15 item 2: the metrics of two KMEs joined by a QKD link (KME_A with SAE_A, KME_B with SAE_B). The master's
// KME counts the keys it handed SAE_A, the slave's KME those SAE_B fetched and the KME-to-KME requests it answered;
// each end reports the link and its own pool; a normal day of reserve, confirm and announce counts no database error.

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({
    kmes: [
      { id: 'KME_A', saes: ['SAE_A'], ops: true },
      { id: 'KME_B', saes: ['SAE_B'], ops: true },
    ],
    links: [{ id: 'A-B', ends: ['KME_A', 'KME_B'] }],
    fill: 100,
  });
});
t.teardown(() => net?.close());

t.test('both ends of a link count their side of a delivery', async (t) => {
  const enc = await net.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', { number: 4 });
  t.equal(enc.status, 200);
  const dec = await net.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200);

  const a = await scrape(net.kme('KME_A').kms.opsUrl!);
  const b = await scrape(net.kme('KME_B').kms.opsUrl!);
  const pair = { master_sae: 'SAE_A', slave_sae: 'SAE_B' };
  t.equal(valueOf(a, 'qkms_keys_delivered_total', { operation: 'enc_keys', ...pair }), 4, "KME_A: the master's keys");
  t.equal(valueOf(a, 'qkms_keys_delivered_total', { operation: 'dec_keys' }), undefined, 'KME_A: no slave fetched there');
  t.equal(valueOf(b, 'qkms_keys_delivered_total', { operation: 'dec_keys', ...pair }), 4, "KME_B: the slave's keys");
  t.equal(valueOf(b, 'qkms_keys_delivered_total', { operation: 'enc_keys' }), undefined, 'KME_B: no master asked there');
  t.ok((valueOf(b, 'qkms_http_request_duration_seconds_count', { operation: 'peer', code: '200' }) ?? 0) >= 1, 'KME_B answered KME_A (the reservation)');
  t.ok(a.samples.every((x) => x.labels.kme_id === 'KME_A') && b.samples.every((x) => x.labels.kme_id === 'KME_B'), 'each KME its own registry');
  for (const [name, s] of [['KME_A', a], ['KME_B', b]] as const) {
    t.equal(valueOf(s, 'qkms_link_up', { link_id: 'A-B' }), 1, `${name}: the link is up`);
    t.ok((valueOf(s, 'qkms_link_ingested_keys_total', { link_id: 'A-B' }) ?? 0) > 0, `${name}: ingested material`);
    t.ok((valueOf(s, 'qkms_pool_available_keys', { link_id: 'A-B' }) ?? -1) >= 0, `${name}: its pool`);
    t.ok(valueOf(s, 'qkms_pool_unconfirmed_keys', { link_id: 'A-B' }) !== undefined, `${name}: its unconfirmed keys`);
    t.equal(valueOf(s, 'qkms_database_errors_total') ?? 0, 0, `${name}: no database error`);
    t.equal(valueOf(s, 'qkms_refusals_total') ?? 0, 0, `${name}: nothing refused`);
  }
});
