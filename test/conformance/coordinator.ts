import type { Test } from 'tap';
import type { CacheTopic, Coordinator } from '../../src/coord/coordinator.js';
import { eventually } from '../helpers/etsi.js';

/**
 * The contract of Coordinator (src/coord/coordinator.ts), run against every implementation. `open` gives two
 * coordinators of one KME as two replicas see it (for the in-process one, both are the same object: a single node).
 * A publish reaches the handlers of every replica, the publisher's included; unsubscribed handlers hear nothing;
 * counters add up across replicas, atomically (concurrent takes never pass the limit together), say how long to wait,
 * and a refund gives back exactly what was taken.
 */
export async function coordinatorConformance(t: Test, open: () => Promise<{ a: Coordinator; b: Coordinator; close: () => Promise<void> }>): Promise<void> {
  const { a, b, close } = await open();
  t.teardown(close);

  const heardA: Array<CacheTopic | 'all'> = [];
  const heardB: Array<CacheTopic | 'all'> = [];
  const offA = a.onChange((x) => heardA.push(x));
  b.onChange((x) => heardB.push(x));
  await a.publish('principals');
  await b.publish('policies');
  t.ok(await eventually(async () => heardA.length >= 2 && heardB.length >= 2, 2_000), 'both replicas heard both changes');
  t.same([...heardA].sort(), ['policies', 'principals'], 'replica a hears its own change and b\'s');
  t.same([...heardB].sort(), ['policies', 'principals'], 'replica b hears them too');
  offA();
  await b.publish('pools');
  t.ok(await eventually(async () => heardB.length >= 3, 2_000), 'replica b heard the third');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(heardA.length, 2, 'an unsubscribed handler hears nothing more');

  const name = `pair-${Math.random().toString(36).slice(2)}`;
  const first = await a.take(name, 6, 10, 60);
  t.equal(first.ok, true, '6 of 10 taken');
  const second = await b.take(name, 4, 10, 60);
  t.equal(second.ok, true, '4 more at the other replica: 10 of 10');
  const refused = await a.take(name, 1, 10, 60);
  t.match(refused, { ok: false, used: 10 }, 'the 11th is refused, with what was used');
  if (!refused.ok) t.ok(refused.retryAfterS >= 1 && refused.retryAfterS <= 60, `retry after ${refused.retryAfterS} s`);
  if (second.ok) await a.refund(name, 4, second.second, 60);
  t.match(await b.take(name, 4, 10, 60), { ok: true }, 'a refund gives back exactly what was taken');
  t.match(await b.take(name, 1, 10, 60), { ok: false }, 'and no more');

  const race = `race-${Math.random().toString(36).slice(2)}`;
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).take(race, 1, 25, 60)));
  t.equal(results.filter((r) => r.ok).length, 25, '60 concurrent takes of 1 against a limit of 25, across replicas: exactly 25 pass');

  await a.check();
  await b.check();
  t.pass('check() answers while the coordinator is up');
}
