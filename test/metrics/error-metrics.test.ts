import t from 'tap';
import { canDrillOutage } from '../../src/sources/link-source.js';
import { eventually, sleep } from '../helpers/etsi.js';
import { startTestKms } from '../helpers/kms.js';
import { scrape, valueOf } from '../helpers/metrics.js';
import { hostPortOf, TcpProxy } from '../helpers/tcp-proxy.js';

// Issue 15 item 2: the failure counters and gauges of GET /metrics move when the HSM, the database or a link device
// fails — each failure made real here: hsm-mock's outage switch (no way to take a SoftHSM token from a running
// process), a statement the database refuses, a TCP proxy that cuts the database off, the simulator's outage drill.

const LINK = 'KME_T-loopback';

t.test('HSM, database and link failures are counted', async (t) => {
  let proxy: TcpProxy | undefined;
  const k = await startTestKms({
    hsm: 'mock',
    ops: { listen: { host: '127.0.0.1', port: 0 } },
    databaseUrl: async (url) => {
      proxy = await TcpProxy.start(hostPortOf(url));
      return proxy.urlFor(url);
    },
  });
  t.teardown(async () => {
    await k.close();
    await proxy?.close();
  });
  const ops = k.kms.opsUrl!;
  const a = k.client('SAE_A');
  const first = await scrape(ops);
  t.equal(valueOf(first, 'qkms_hsm_errors_total') ?? 0, 0, 'no HSM error yet');

  // The HSM: a key cannot be unwrapped, the request fails, the decrypt failure is counted, the refusal too.
  k.mock!.simulateOutage(true);
  // On a busy machine a request can also be shed or time out before it reaches the HSM: ask until one reaches it.
  let down = await a.get('/api/v1/keys/SAE_B/enc_keys');
  for (let i = 0; i < 5 && !/^HSM unavailable/.test(down.body?.message); i++) down = await a.get('/api/v1/keys/SAE_B/enc_keys');
  k.mock!.simulateOutage(false);
  t.equal(down.status, 503);
  t.match(down.body?.message, /^HSM unavailable/);
  const afterHsm = await scrape(ops);
  t.ok((valueOf(afterHsm, 'qkms_hsm_errors_total', { operation: 'decrypt', kind: 'unavailable' }) ?? 0) >= 1, 'the failed decrypt');
  t.ok((valueOf(afterHsm, 'qkms_refusals_total', { operation: 'enc_keys', caller: 'sae:SAE_A', reason: 'hsm_unavailable' }) ?? 0) >= 1, 'the 503, by reason');

  // A statement the database refuses: exactly one more statement error.
  const statementErrors = valueOf(afterHsm, 'qkms_database_errors_total', { kind: 'statement' }) ?? 0;
  await t.rejects(k.kms.db.query('SELECT 1/0'), /division by zero/);
  t.equal(valueOf(await scrape(ops), 'qkms_database_errors_total', { kind: 'statement' }), statementErrors + 1, 'the refused statement');

  // The database cut off: deliveries fail and the connection errors are counted; the scrape still answers, without
  // the database-derived gauges, and says so.
  await sleep(1_100); // past the read the last scrape shared
  await proxy!.refuse();
  t.equal((await a.get('/api/v1/keys/SAE_B/enc_keys')).status, 503, 'no key without the database');
  const started = Date.now();
  const cut = await scrape(ops);
  t.ok(Date.now() - started < 5_000, `the scrape answered in ${Date.now() - started} ms`);
  t.ok((valueOf(cut, 'qkms_database_errors_total', { kind: 'connection' }) ?? 0) >= 1, 'connection errors');
  t.equal(valueOf(cut, 'qkms_metrics_database_read_success'), 0, 'the database-derived figures could not be read');
  t.equal(valueOf(cut, 'qkms_pool_available_keys'), undefined, 'and are left out, not stale');
  t.equal(valueOf(cut, 'qkms_link_up', { link_id: LINK }), 1, 'figures from memory are still there');
  await proxy!.restore();
  const back = await eventually(async () => {
    await sleep(1_000); // past the read the last scrape shared
    const s = await scrape(ops);
    return valueOf(s, 'qkms_metrics_database_read_success') === 1 ? s : undefined;
  }, 15_000, 0);
  t.ok(back, 'the database-derived figures are read again');
  t.ok((valueOf(back!, 'qkms_pool_available_keys', { link_id: LINK }) ?? -1) >= 0, 'the pool level is back');

  // A link outage: down while it lasts, counted once.
  const source = k.kms.sources.get(LINK)!;
  if (!canDrillOutage(source)) throw new Error('the test link is simulated and can be cut');
  source.outage(1_500);
  const outage = await scrape(ops);
  t.equal(valueOf(outage, 'qkms_link_up', { link_id: LINK }), 0, 'the link is down');
  t.equal(valueOf(outage, 'qkms_link_outages_total', { link_id: LINK }), 1, 'one outage');
  await sleep(1_700);
  const over = await scrape(ops);
  t.equal(valueOf(over, 'qkms_link_up', { link_id: LINK }), 1, 'up again');
  t.equal(valueOf(over, 'qkms_link_outages_total', { link_id: LINK }), 1, 'still one outage');
});
