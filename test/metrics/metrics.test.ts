import t from 'tap';
import { startTestKms } from '../helpers/kms.js';
import { findLeaks } from '../helpers/leak-scan.js';
import { scrape, valueOf, type Scrape } from '../helpers/metrics.js';

// Issue 15 item 2: GET /metrics on the ops listener of a real KME (real TLS clients, real database). The figures
// must move with what the KME did: keys delivered, refusals by reason, one latency observation per answer, the pool
// level the database holds, the sealer's lag; and the scrape never carries key bytes or key_IDs.

const LINK = 'KME_T-loopback';

t.test('a KME serves keys, refuses, and its metrics say so', async (t) => {
  const k = await startTestKms({
    hsm: 'mock', // the HSM outage below is hsm-mock's switch
    ops: { listen: { host: '127.0.0.1', port: 0 } },
    policies: [{ saes: ['SAE_A', 'SAE_B'], min_pool_keys: 100 }],
  });
  t.teardown(() => k.close());
  const ops = k.kms.opsUrl!;
  const a = k.client('SAE_A');
  const b = k.client('SAE_B');
  const stranger = k.client('SAE_X');

  const before = await scrape(ops);
  t.equal(valueOf(before, 'qkms_keys_delivered_total'), undefined, 'nothing delivered yet');

  // What the KME is asked, and so what the metrics must count.
  const keys: Array<{ key_ID: string; key: string }> = [];
  const r1 = await a.get('/api/v1/keys/SAE_B/enc_keys?number=3');
  const r2 = await a.post('/api/v1/keys/SAE_B/enc_keys', { number: 2, size: 512 });
  t.equal(r1.status, 200);
  t.equal(r2.status, 200);
  keys.push(...r1.body.keys, ...r2.body.keys);
  t.equal((await a.get('/api/v1/keys/SAE_B/status')).status, 200);
  const dec = await b.post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: r1.body.keys.map((x: { key_ID: string }) => ({ key_ID: x.key_ID })) });
  t.equal(dec.status, 200);
  t.equal(dec.body.keys.length, 3);
  const again = await b.get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${r1.body.keys[0].key_ID}`);
  t.equal(again.status, 400, 'a key fetched twice: refused');
  t.equal((await stranger.get('/api/v1/keys/SAE_B/status')).status, 401, 'a stranger: refused');

  const s = await scrape(ops);
  t.equal(valueOf(s, 'qkms_keys_delivered_total', { operation: 'enc_keys', master_sae: 'SAE_A', slave_sae: 'SAE_B' }), 5, 'enc_keys: 3 + 2 keys');
  t.equal(valueOf(s, 'qkms_keys_delivered_total', { operation: 'dec_keys', master_sae: 'SAE_A', slave_sae: 'SAE_B' }), 3, 'dec_keys: 3 keys');
  t.equal(valueOf(s, 'qkms_refusals_total', { operation: 'dec_keys', caller: 'sae:SAE_B', reason: 'keys_not_found' }), 1, 'the second fetch, by reason');
  const anonymous = s.samples.filter((x) => x.name === 'qkms_refusals_total' && x.labels.caller === 'anonymous');
  t.equal(anonymous.length, 1, 'the stranger is anonymous');
  t.equal(anonymous[0]?.labels.operation, 'status');
  t.equal(anonymous[0]?.labels.reason, 'unknown_principal', 'a certificate the CA signed for no SAE of this KME');

  // One latency observation per answer, by operation and status code.
  const count = (operation: string, code: string) => valueOf(s, 'qkms_http_request_duration_seconds_count', { operation, code }) ?? 0;
  t.equal(count('enc_keys', '200'), 2);
  t.equal(count('dec_keys', '200'), 1);
  t.equal(count('dec_keys', '400'), 1);
  t.equal(count('status', '200'), 1);
  t.equal(count('status', '401'), 1);
  t.equal(valueOf(s, 'qkms_http_request_duration_seconds_count'), 6, 'six requests, six observations');
  const inf = valueOf(s, 'qkms_http_request_duration_seconds_bucket', { operation: 'enc_keys', code: '200', le: '+Inf' });
  t.equal(inf, 2, 'the +Inf bucket holds every observation');
  t.ok((valueOf(s, 'qkms_http_request_duration_seconds_sum', { operation: 'enc_keys' }) ?? 0) > 0, 'latencies add up to some time');

  t.equal(valueOf(s, 'qkms_database_errors_total') ?? 0, 0, 'a normal day: no database error (the alert on them stays quiet)');
  t.equal(valueOf(s, 'qkms_hsm_errors_total') ?? 0, 0, 'and no HSM error');

  // Link figures from memory.
  const blockBits = k.config.keys.key_size;
  t.ok((valueOf(s, 'qkms_link_ingested_keys_total', { link_id: LINK }) ?? 0) >= 2000, 'the ingest that filled the pool is counted');
  t.equal(valueOf(s, 'qkms_link_ingested_bits_total', { link_id: LINK }), valueOf(s, 'qkms_link_ingested_keys_total', { link_id: LINK })! * blockBits);
  t.equal(valueOf(s, 'qkms_link_up', { link_id: LINK }), 1);
  t.equal(valueOf(s, 'qkms_link_qber_ratio', { link_id: LINK }), k.kms.sources.get(LINK)!.figures().qber, 'the QBER the simulator reports');
  t.equal(valueOf(s, 'qkms_link_outages_total', { link_id: LINK }), 0);
  t.equal(valueOf(s, 'qkms_link_in_fallback', { link_id: LINK }), 0);
  t.equal(valueOf(s, 'qkms_pool_minimum_keys', { link_id: LINK }), 100, "the pair's min_pool_keys");

  // Every series carries the KME; the process metrics are there.
  t.ok(s.samples.every((x) => x.labels.kme_id === 'KME_T'), 'kme_id on every series');
  t.ok(valueOf(s, 'process_cpu_user_seconds_total') !== undefined, 'process metrics');
  t.ok(valueOf(s, 'nodejs_eventloop_lag_seconds') !== undefined, 'event-loop lag');

  // No key material and no key_ID in the scrape: not in labels, not anywhere.
  const leaks = findLeaks(keys.map((x) => Buffer.from(x.key, 'base64')), { texts: [{ where: 'GET /metrics', text: s.text }], bytes: [{ where: 'GET /metrics', bytes: Buffer.from(s.text) }] });
  t.same(leaks, [], 'no key bytes');
  for (const x of keys) t.notOk(s.text.includes(x.key_ID), `no key_ID ${x.key_ID}`);
  t.notMatch(s.text, /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i, 'no UUID at all');
  await k.kms.refusals.flush();
});

t.test('pool level and sealer lag are what the database holds', async (t) => {
  const k = await startTestKms({ hsm: 'mock', ops: { listen: { host: '127.0.0.1', port: 0 } } });
  t.teardown(() => k.close());
  const a = k.client('SAE_A');
  t.equal((await a.get('/api/v1/keys/SAE_B/enc_keys?number=10')).status, 200);
  const available = async () => Number((await k.kms.db.query('SELECT sum(available)::bigint AS n FROM pool_count')).rows[0].n);
  // The simulator refills the pool: compare at a moment when the database holds still around the scrape. A scrape
  // shares the read of one less than a second old (src/metrics/scrape-read.ts), so each try waits past it: else a
  // retry could compare a steady database with the figures of the try before (CI saw 1,990 keys against 2,000).
  let seen: { db: number; s: Scrape } | undefined;
  for (let i = 0; i < 20 && !seen; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 1_100));
    const first = await available();
    const s = await scrape(k.kms.opsUrl!);
    if ((await available()) === first) seen = { db: first, s };
  }
  t.ok(seen, 'a steady moment came');
  t.equal(valueOf(seen!.s, 'qkms_pool_available_keys', { link_id: LINK }), seen!.db, 'available keys: the sum of the pool counters');
  t.equal(valueOf(seen!.s, 'qkms_pool_available_bits', { link_id: LINK }), seen!.db * k.config.keys.key_size);
  t.equal(valueOf(seen!.s, 'qkms_metrics_database_read_success'), 1);

  // The sealer runs every 500 ms: the scrape's lag lies between what the database said just before and after it.
  await k.kms.refusals.flush();
  await k.kms.sealer.sealOnce();
  const lag = async () => {
    const { rows } = await k.kms.db.query(`SELECT (SELECT max(seq) FROM audit_event) - (SELECT max(tree_size) FROM audit_seal) AS lag`);
    return Number(rows[0].lag);
  };
  await new Promise((r) => setTimeout(r, 1_100)); // past the read the last scrape shared
  const lagBefore = await lag();
  const s = await scrape(k.kms.opsUrl!);
  const lagAfter = await lag();
  const unsealed = valueOf(s, 'qkms_audit_unsealed_events')!;
  t.ok(unsealed >= 0 && unsealed <= Math.max(lagBefore, lagAfter), `unsealed events: ${unsealed} (the database: ${lagBefore} before, ${lagAfter} after)`);
  const age = valueOf(s, 'qkms_audit_last_checkpoint_age_seconds')!;
  t.ok(age >= 0 && age < 10, `seconds since the last checkpoint: ${age}`);
  const oldest = valueOf(s, 'qkms_audit_oldest_unsealed_event_age_seconds')!;
  t.ok(oldest >= 0 && oldest < 10, `the oldest unsealed event waits ${oldest} s`);

});
