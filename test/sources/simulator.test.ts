import t from 'tap';
import { DeviceUnavailableError } from '../../src/sources/link-source.js';
import { QBER_ABORT, SimulatedDevice } from '../../src/sources/simulator.js';

// A fake clock drives the simulator, so rates and outages are checked exactly rather than timed.

const SEED = Buffer.alloc(32, 7);

function device(opts: { rate: number; startSeq?: string; bufferBlocks?: number; seed?: Buffer; qber?: number; outages?: Array<{ afterMs: number; durationMs: number }> }) {
  let now = 0;
  const sim = new SimulatedDevice({
    linkId: 'L',
    blockBits: 256,
    rateBitsPerSecond: opts.rate,
    qber: opts.qber ?? 0.02,
    seed: opts.seed,
    startSeq: opts.startSeq ?? '0',
    bufferBlocks: opts.bufferBlocks,
    outages: opts.outages,
    now: () => now,
  });
  return { sim, advance: (ms: number) => (now += ms) };
}

t.test('produces blocks at the configured secure-key rate; refs are stream positions', async (t) => {
  const { sim, advance } = device({ rate: 256 * 10, bufferBlocks: 1000 }); // 10 blocks per second
  t.same(await sim.take(100), []);
  advance(1000);
  const keys = await sim.take(100);
  t.same(keys.map((k) => [k.ref, k.blocks]), [['0', 10]]);
  t.equal(keys[0]!.material.length, 320);
  advance(500);
  t.same((await sim.take(3)).map((k) => [k.ref, k.blocks]), [['10', 3]], 'continues where it stopped, at most maxBlocks');
  t.same((await sim.take(10)).map((k) => [k.ref, k.blocks]), [['13', 2]]);
});

t.test('a seeded pair: the secondary derives exactly what the primary took, by ref', async (t) => {
  const a = device({ rate: 256 * 100, seed: SEED, startSeq: '1000', bufferBlocks: 1000 });
  const b = device({ rate: 256 * 100, seed: SEED, bufferBlocks: 1000 });
  a.advance(1000);
  const taken = await a.sim.take(40);
  const fetched = await b.sim.fetch(taken.map((k) => ({ ref: k.ref, blocks: k.blocks })));
  t.same(fetched.map((m) => m.toString('hex')), taken.map((k) => k.material.toString('hex')));
  // Any sub-range agrees too (positions are independent of how they were grouped).
  const part = await b.sim.fetch([{ ref: '1005', blocks: 2 }]);
  t.equal(part[0]!.toString('hex'), taken[0]!.material.subarray(5 * 32, 7 * 32).toString('hex'));
  const other = device({ rate: 1, seed: Buffer.alloc(32, 8) });
  t.not((await other.sim.fetch([{ ref: '1000', blocks: 1 }]))[0]!.toString('hex'), taken[0]!.material.subarray(0, 32).toString('hex'), 'another seed, other material');
});

t.test('a loopback simulator has nothing to fetch', async (t) => {
  const { sim } = device({ rate: 1000 });
  await t.rejects(sim.fetch([{ ref: '0', blocks: 1 }]), /loopback/);
});

t.test('a full device buffer pauses the device: no position is skipped', async (t) => {
  const { sim, advance } = device({ rate: 256 * 1000, bufferBlocks: 50 });
  advance(10_000);
  const first = await sim.take(10_000);
  t.same(first.map((k) => [k.ref, k.blocks]), [['0', 50]]);
  advance(10);
  t.same((await sim.take(10_000)).map((k) => k.ref), ['50'], 'the next take starts right after, however long the pause');
  await sim.close();
  await t.rejects(sim.take(10), DeviceUnavailableError, 'nothing after close');
});

t.test('outages: scheduled and on demand; no key distils while down', async (t) => {
  const { sim, advance } = device({ rate: 256 * 10, bufferBlocks: 1000, outages: [{ afterMs: 1000, durationMs: 2000 }] });
  advance(1000);
  await t.rejects(sim.take(100), DeviceUnavailableError, 'down from 1 s');
  t.equal(sim.figures().up, false);
  advance(2000);
  const after = await sim.take(100);
  t.same(after.map((k) => [k.ref, k.blocks]), [['0', 10]], 'back at 3 s: the first second produced 10 blocks, the outage none');
  t.match(sim.figures(), { up: true, lastOutage: { durationMs: 2000 }, outages: 1 });
  advance(1000);
  t.same((await sim.take(100)).map((k) => [k.ref, k.blocks]), [['10', 10]]);
  sim.outage(500);
  await t.rejects(sim.take(1), DeviceUnavailableError, 'an outage on demand');
  advance(500);
  t.same(await sim.take(100), []);
  t.equal(sim.figures().outages, 2, 'each outage counted once');
});

t.test('an outage on demand ends early when told to; later ones still happen', async (t) => {
  const { sim, advance } = device({ rate: 256 * 10, bufferBlocks: 1000, outages: [{ afterMs: 5000, durationMs: 1000 }] });
  sim.outage(60_000);
  await t.rejects(sim.take(1), DeviceUnavailableError, 'down');
  advance(1000);
  await t.rejects(sim.take(1), DeviceUnavailableError, 'still down a second later');
  sim.endOutage();
  t.same(await sim.take(100), [], 'up again at once, with nothing distilled while it was down');
  t.match(sim.figures(), { up: true, outages: 1, lastOutage: { durationMs: 1000 } });
  advance(1000);
  t.same((await sim.take(100)).map((k) => k.blocks), [10], 'distilling again');
  advance(3000);
  await t.rejects(sim.take(1), DeviceUnavailableError, 'the scheduled outage is untouched');
});

t.test('an outage while nobody takes (a full pool) is counted when the figures are read', async (t) => {
  const { sim, advance } = device({ rate: 256 * 10, bufferBlocks: 1000, outages: [{ afterMs: 1000, durationMs: 500 }] });
  advance(1200);
  t.match(sim.figures(), { up: false, outages: 1 });
  advance(500);
  t.match(sim.figures(), { up: true, outages: 1, lastOutage: { durationMs: 500 } });
});

t.test(`a QBER above ${QBER_ABORT} yields no key`, async (t) => {
  const { sim, advance } = device({ rate: 256 * 100, qber: 0.15 });
  advance(5000);
  t.same(await sim.take(100), []);
  t.equal(sim.figures().qber, 0.15);
});
