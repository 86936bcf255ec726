import fc from 'fast-check';
import t from 'tap';
import { InProcessCoordinator } from '../../src/coord/in-process.js';
import { coordinatorConformance } from '../conformance/coordinator.js';

// The single-node coordinator (no Redis configured): the shared contract, with both "replicas" the one process.
t.test('in-process coordinator: the Coordinator contract', (t) =>
  coordinatorConformance(t, async () => {
    const c = new InProcessCoordinator();
    return { a: c, b: c, close: () => c.close() };
  }),
);

t.test('buckets leave the window as time passes', async (t) => {
  let now = 1_000_000;
  const c = new InProcessCoordinator(() => now);
  t.match(await c.take('p', 3, 5, 10), { ok: true });
  now += 4_000;
  t.match(await c.take('p', 2, 5, 10), { ok: true });
  t.match(await c.take('p', 1, 5, 10), { ok: false, used: 5, retryAfterS: 6 }, 'the first 3 leave the window 6 s from now');
  now += 6_000;
  t.match(await c.take('p', 3, 5, 10), { ok: true }, 'and then there is room for 3');
});

t.test('property: over any sliding window, what was granted never exceeds the limit', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 50 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 1, max: 20 })), { maxLength: 200 }), async (limit, steps) => {
      let now = 0;
      const c = new InProcessCoordinator(() => now);
      const granted: Array<[number, number]> = [];
      for (const [advance, n] of steps) {
        now += advance;
        if ((await c.take('P', n, limit, 60)).ok) granted.push([Math.floor(now / 1000), n]);
      }
      return granted.every(([second]) => granted.filter(([s]) => s > second - 60 && s <= second).reduce((a, [, n]) => a + n, 0) <= limit);
    }),
  );
});
