import t from 'tap';
import { SimulatedLink } from '../../src/sources/simulator.js';

// A fake clock drives the simulator, so rates are checked exactly rather than timed.

function link(rate: number, startSeq = '0', bufferBlocks?: number) {
  let now = 0;
  const sim = new SimulatedLink({ linkId: 'L', kmeId: 'K', blockBits: 256, rateBitsPerSecond: rate, startSeq, bufferBlocks, now: () => now });
  return { sim, advance: (ms: number) => (now += ms) };
}

t.test('produces blocks at the configured secure-key rate', async (t) => {
  const { sim, advance } = link(256 * 10, '0', 1000); // 10 blocks per second
  t.same(sim.pending(100), []);
  advance(1000);
  const blocks = sim.pending(100);
  t.equal(blocks.length, 10);
  t.same(blocks.map((b) => b.seq), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  t.ok(blocks.every((b) => b.material.length === 32));
  t.equal(new Set(blocks.map((b) => b.material.toString('hex'))).size, 10, 'distinct material');
});

t.test('at-least-once: unacknowledged blocks come back, acknowledged ones are wiped and gone', async (t) => {
  const { sim, advance } = link(256 * 10, '100', 1000);
  advance(500);
  const first = sim.pending(3);
  t.same(sim.pending(3).map((b) => b.seq), first.map((b) => b.seq), 'same blocks until acknowledged');
  const held = first[0]!.material;
  sim.acknowledge(2);
  t.ok(held.every((byte) => byte === 0), 'plaintext wiped on acknowledge');
  t.same(sim.pending(10).map((b) => b.seq), ['102', '103', '104'], 'continues after the acknowledged blocks');
});

t.test('a full device buffer drops material rather than growing without bound', async (t) => {
  const { sim, advance } = link(256 * 1000, '0', 50);
  advance(10_000);
  t.equal(sim.pending(10_000).length, 50);
  sim.close();
  t.same(sim.pending(10), [], 'nothing after close');
});
