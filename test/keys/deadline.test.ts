import t from 'tap';
import type { Response } from '../helpers/client.js';
import { etsiErrorProblem, sleep } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { hostPortOf, TcpProxy } from '../helpers/tcp-proxy.js';

// Get key during a database stall (the review found an unbounded queue with no deadline: requests piled up and
// could still commit, burning keys, after their clients gave up). Now at most `max_queued` wait per link (more get
// a 503 at once), every request gets its 503 by its deadline, and what timed out commits nothing afterwards.

const DEADLINE_MS = 1_500;
const MAX_QUEUED = 8;

let k: TestKms;
let proxy: TcpProxy;
t.before(async () => {
  k = await startTestKms({
    keys: { max_key_count: 500 },
    requests: { deadline_ms: DEADLINE_MS, max_queued: MAX_QUEUED },
    databaseUrl: async (url) => {
      proxy = await TcpProxy.start(hostPortOf(url));
      return proxy.urlFor(url);
    },
  });
});
t.teardown(async () => {
  await k?.close();
  await proxy?.close();
});

t.test('a stalled database: bounded queue, a 503 by the deadline, nothing committed afterwards', async (t) => {
  const clients = Array.from({ length: 40 }, () => k.client('SAE_A'));
  await Promise.all(clients.map((c) => c.get('/api/v1/keys/SAE_B/status')));
  await k.kms.ingesters.get('KME_T-loopback')!.stop();
  const { rows: before } = await k.kms.db.query('SELECT count(*)::int AS n FROM qkd_key').catch(() => ({ rows: [{ n: -1 }] }));
  proxy.blackhole();
  const started = Date.now();
  const answers = await Promise.all(
    clients.map(async (c) => {
      const res: Response = await c.get('/api/v1/keys/SAE_B/enc_keys');
      return { res, ms: Date.now() - started };
    }),
  );
  const slowest = Math.max(...answers.map((a) => a.ms));
  t.ok(answers.every((a) => a.res.status === 503), 'every request gets a 503');
  t.ok(answers.every((a) => !etsiErrorProblem(a.res)), 'each with an ETSI Error body');
  t.ok(slowest < DEADLINE_MS + 1_000, `the last answer came after ${slowest} ms (deadline ${DEADLINE_MS} ms)`);
  const full = answers.filter((a) => /too many key requests waiting/.test(a.res.body?.message));
  const timedOut = answers.filter((a) => /timed out/.test(a.res.body?.message));
  t.comment(`${full.length} refused at once (queue full), ${timedOut.length} timed out`);
  t.ok(full.length > 0, 'the queue is bounded: some were refused at once');
  t.ok(full.every((a) => a.ms < 500), 'and at once');
  t.equal(full.length + timedOut.length, answers.length, 'no other kind of refusal');

  await proxy.restore();
  await sleep(3_000); // whatever was stuck has either failed or committed by now
  const { rows: after } = await k.kms.db.query('SELECT count(*)::int AS n FROM qkd_key');
  t.equal(after[0].n, before[0].n, 'no key was committed for a request that got its 503');
  const res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(res.status, 200, 'serving again once the database is back');
});
