import t from 'tap';
import { InProcessCoordinator } from '../../src/coord/in-process.js';
import { PairRateLimiter } from '../../src/policy/rate-limiter.js';
import type { StoredPolicy } from '../../src/store/policies.js';

// The keys-per-minute limit of policies per SAE pair (src/policy/rate-limiter.ts) over the coordinator's counters
// (their sliding window is tested with the coordinators, test/coord/): all or nothing across the pairs of a request,
// a refused request names the pair, the limit and the wait, and when the counters cannot answer it fails closed.
const policy = (a: string, b: string, max?: number) => ({ saes: [a, b], ...(max !== undefined ? { maxKeysPerMinute: max } : {}), tags: {} }) as unknown as StoredPolicy;

t.test('all or nothing across the pairs of a request; a refusal names the limit and the wait', async (t) => {
  let now = 1_000_000;
  const r = new PairRateLimiter(new InProcessCoordinator(() => now));
  await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 10), policy('SAE_A', 'SAE_C', 4)], 3);
  const err = await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 10), policy('SAE_A', 'SAE_C', 4)], 3).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /the policy of SAE_A and SAE_C allows 4 keys a minute at this KME; 3 were taken in the last minute: try again in 60 s/);
  t.same(await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 10)], 7).then((c) => c.length), 1, 'the refused request took nothing from SAE_A/SAE_B: 7 more fit');
  t.same(await r.charge('SAE_A', [policy('SAE_A', 'SAE_D')], 1000), [], 'a pair without a limit is not counted');
  now += 60_000;
  t.equal((await r.charge('SAE_A', [policy('SAE_A', 'SAE_C', 4)], 4)).length, 1, 'a minute later the window is empty again');
});

t.test('a refund gives back what a failed request took', async (t) => {
  const r = new PairRateLimiter(new InProcessCoordinator());
  const charged = await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 5)], 5);
  await r.refundAll(charged, 5);
  t.equal((await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 5)], 5)).length, 1);
});

t.test('counters that cannot answer: the limited pair fails closed, what was charged is given back', async (t) => {
  const inner = new InProcessCoordinator();
  let down = false;
  const flaky = {
    take: (name: string, n: number, limit: number, w: number) => (down && name.includes('SAE_C') ? Promise.reject(new Error('redis: no answer within 1 s')) : inner.take(name, n, limit, w)),
    refund: inner.refund.bind(inner),
  };
  const r = new PairRateLimiter(flaky);
  down = true;
  const err = await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 5), policy('SAE_A', 'SAE_C', 5)], 5).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /the keys-per-minute limit of SAE_A and SAE_C cannot be checked \(redis: no answer within 1 s\); nothing was taken/);
  t.equal((await r.charge('SAE_A', [policy('SAE_A', 'SAE_B', 5)], 5)).length, 1, "SAE_A/SAE_B's 5 were given back");
});
