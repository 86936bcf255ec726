import t from 'tap';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// Issue 15 item 3: load shedding (src/http/load-shedding.ts, @fastify/under-pressure). While the event loop lags past
// the limit (here 50 ms, its mean over a one-second sample), every request gets a 503 with the ETSI Error body and
// Retry-After at once, and takes nothing; when the lag is gone, keys again. The lag is made in this process, where the
// KME runs: busy-waiting 80 ms at a time.

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ requests: { max_event_loop_delay_ms: 50 } });
});
t.teardown(() => k?.close());

/** Keeps the event loop busy 80 ms out of every ~85 until `until`. */
function lag(until: number): Promise<void> {
  return new Promise((resolve) => {
    const step = () => {
      if (Date.now() >= until) return resolve();
      const end = Date.now() + 80;
      while (Date.now() < end);
      setTimeout(step, 5);
    };
    step();
  });
}

const keyRows = async () => Number((await k.kms.db.query(`SELECT count(*)::int AS n FROM qkd_key`)).rows[0].n);

t.test('a lagging event loop sheds requests with a 503, and takes nothing', async (t) => {
  const before = await keyRows();
  const lagging = lag(Date.now() + 3_500);
  // The one-second samples run on their own phase: after 2.5 s of lag one of them lies wholly inside it, and the
  // check that reads it (every 250 ms) has run since.
  await new Promise((r) => setTimeout(r, 2_500));
  const res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  await lagging;
  t.equal(res.status, 503, 'shed');
  t.match(res.body, { message: /^the KME is overloaded \(its event loop lags \d+ ms\); nothing was taken/ });
  t.equal(res.headers['retry-after'], '1');
  t.equal(await keyRows(), before, 'no key taken');
  t.match(k.logs(), /overloaded: requests shed with 503/, 'and the log says so');
});

t.test('once the lag is gone, keys again', async (t) => {
  await new Promise((r) => setTimeout(r, 2_500)); // the next samples see a quiet loop
  const res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(res.status, 200, answered(res, 'served'));
});
