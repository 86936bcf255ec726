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
