import t from 'tap';
import { Readiness, type ReadinessCheck } from '../../src/ops/readiness.js';
import { hostPortOf, TcpProxy } from '../helpers/tcp-proxy.js';
import { startTestKms } from '../helpers/kms.js';

// Issue 15 item 3: liveness and readiness on the ops listener (src/ops/). Ready only when the database and the HSM
// answer and the process serves; not ready while it starts or shuts down.

t.test('Readiness: phases, timeouts, the cache', async (t) => {
  let runs = 0;
  let fail: string | undefined;
  const check: ReadinessCheck = {
    name: 'thing',
    run: async () => {
      runs++;
      if (fail === 'hang') await new Promise(() => undefined);
      if (fail) throw new Error(fail);
    },
  };
  const r = new Readiness([check], { timeoutMs: 100, cacheMs: 200 });
  t.same(await r.state(), { ready: false, checks: { process: 'starting' } }, 'not ready before it serves');
  r.markServing();
  t.same(await r.state(), { ready: true, checks: { thing: 'ok' } });
  fail = 'broken';
  t.same(await r.state(), { ready: true, checks: { thing: 'ok' } }, 'the answer is kept a while');
  t.equal(runs, 1, 'one round for both probes');
  await new Promise((res) => setTimeout(res, 220));
  t.same(await r.state(), { ready: false, checks: { thing: 'broken' } }, 'then asked again');
  fail = 'hang';
  await new Promise((res) => setTimeout(res, 220));
  t.same(await r.state(), { ready: false, checks: { thing: 'no answer within 100 ms' } }, 'a check that hangs counts as failed');
  r.markClosing();
  t.same(await r.state(), { ready: false, checks: { process: 'closing' } });
});

let k: Awaited<ReturnType<typeof startTestKms>>;
let proxy: TcpProxy;
t.test('a running KME', async (t) => {
  k = await startTestKms({
    // hsm-mock: the HSM outage below is its switch (no way to take a SoftHSM token away from a running process here).
    hsm: 'mock',
    fill: false,
    ops: { listen: { host: '127.0.0.1', port: 0 } },
    databaseUrl: async (url) => {
      proxy = await TcpProxy.start(hostPortOf(url));
      return proxy.urlFor(url);
    },
  });
  t.teardown(async () => {
    await k?.close();
    await proxy?.close();
  });
  const ops = k.kms.opsUrl!;
  t.match(ops, /^http:\/\/127\.0\.0\.1:\d+$/, 'the ops listener is plain HTTP on the address configured');
  const get = async (path: string) => {
    const res = await fetch(`${ops}${path}`);
    return { status: res.status, body: (await res.json()) as any };
  };
  t.same(await get('/livez'), { status: 200, body: { status: 'alive' } });
  t.same(await get('/readyz'), { status: 200, body: { status: 'ready', checks: { database: 'ok', hsm: 'ok' } } });
  t.equal((await get('/metrics-or-anything')).status, 404);

  k.mock!.simulateOutage(true);
  await new Promise((r) => setTimeout(r, 1_100)); // past the cached answer
  const hsmDown = await get('/readyz');
  t.equal(hsmDown.status, 503, 'HSM down: not ready');
  t.match(hsmDown.body.checks, { database: 'ok', hsm: /^hsm: / });
  t.same((await get('/livez')).status, 200, 'but alive');
  k.mock!.simulateOutage(false);

  await proxy.refuse();
  await new Promise((r) => setTimeout(r, 1_100));
  const dbDown = await get('/readyz');
  t.equal(dbDown.status, 503, 'database down: not ready');
  t.match(dbDown.body.checks, { database: /^database: /, hsm: 'ok' });
  proxy.restore();
  await new Promise((r) => setTimeout(r, 1_100));
  t.equal((await get('/readyz')).status, 200, 'back');

  // A stop: the probes hear "not ready" while the API drains, before the listener goes.
  const closing = k.kms.close();
  const during = await get('/readyz');
  t.same(during, { status: 503, body: { status: 'not ready', checks: { process: 'closing' } } });
  await closing;
});
