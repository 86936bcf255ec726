import fc from 'fast-check';
import t from 'tap';
import { PairRateLimiter } from '../../src/policy/rate-limiter.js';

// The keys-per-minute counter of a policy per SAE pair (src/policy/rate-limiter.ts), on a clock the test moves: the
// limit holds over every sliding minute, refunds give keys back, and a refused request says how long to wait.

t.test('a sliding minute: keys taken leave the window 60 s later, and the wait is named', async (t) => {
  let now = 1_000_000;
  const r = new PairRateLimiter(() => now);
  t.match(r.take('A/B', 4, 5), { ok: true });
  now += 30_000;
  t.match(r.take('A/B', 2, 5), { ok: false, used: 4, retryAfterS: 30 }, 'the first four leave in 30 s');
  t.match(r.take('A/B', 1, 5), { ok: true });
  t.match(r.take('C/D', 5, 5), { ok: true }, 'pairs are counted apart');
  now += 30_000;
  t.match(r.take('A/B', 4, 5), { ok: true }, 'a minute after the first four: only the one taken at 30 s counts');
  t.match(r.take('A/B', 1, 5), { ok: false });
});

t.test('a refund gives back what a failed request took', async (t) => {
  let now = 5_000_000;
  const r = new PairRateLimiter(() => now);
  const took = r.take('A/B', 5, 5);
  t.ok(took.ok);
  now += 2_000;
  r.refund('A/B', 5, (took as { second: number }).second);
  t.match(r.take('A/B', 5, 5), { ok: true });
});

t.test('property: over any sliding minute, the keys granted never exceed the limit', async () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 50 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 1, max: 20 })), { maxLength: 200 }), (limit, steps) => {
      let now = 0;
      const r = new PairRateLimiter(() => now);
      const granted: Array<[number, number]> = [];
      for (const [advance, n] of steps) {
        now += advance;
        if (r.take('P', n, limit).ok) granted.push([Math.floor(now / 1000), n]);
      }
      for (const [second] of granted) {
        const inWindow = granted.filter(([s]) => s > second - 60 && s <= second).reduce((a, [, n]) => a + n, 0);
        if (inWindow > limit) return false;
      }
      return true;
    }),
  );
});
