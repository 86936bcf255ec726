import t, { type Test } from 'tap';
import { startAgentPair, until, type AgentPair, type TestAgent } from '../helpers/agents.js';
import { findLeaks } from '../helpers/leak-scan.js';
import { PAIR, startTestNetwork, type TestNetwork } from '../helpers/network.js';

// Failures of the handoff between two real agents on two real KMEs (docs/agent.md, "Crash points"): the slave
// agent down (the old key stays until its maximum age, then fail closed or fail open as each binding says), and
// restarts of either agent in the middle of a rotation (the key bytes were only in memory) — afterwards both
// encryptors use the same key. A step is held in place by making the exec connector's script fail at it.

let net: TestNetwork;
let agents: AgentPair;
t.before(async () => {
  net = await startTestNetwork({ ...PAIR, fill: 100 });
  agents = await startAgentPair(net, [
    { name: 'closed', on_expiry: 'fail_closed', rotation_seconds: 1, max_age_seconds: 4 },
    { name: 'open', on_expiry: 'fail_open', rotation_seconds: 1, max_age_seconds: 4 },
    { name: 'crash', rotation_seconds: 1, max_age_seconds: 60 },
  ]);
  const ready = await until(() => ['closed', 'open', 'crash'].every((b) => (agents.slave.state(b)?.rotations ?? 0) >= 1), 15_000);
  if (!ready) throw new Error(`no first rotation:\n${agents.master.logs()}`);
});
t.teardown(async () => {
  await agents?.close();
  await net?.close();
});

const lastActive = (a: TestAgent, binding: string) => a.records(binding).filter((r) => r.step === 'activate').at(-1);

/**
 * Both sides' encryptors hold the same key in service, and every key_ID both activated has the same bytes. The
 * master switches a moment before the slave (that is the handoff), so this waits up to 3 s for the two to agree.
 */
async function inStep(t: Test, binding: string): Promise<void> {
  await until(() => lastActive(agents.slave, binding)?.keyId === lastActive(agents.master, binding)?.keyId, 3_000);
  const m = lastActive(agents.master, binding);
  const s = lastActive(agents.slave, binding);
  t.ok(m && s, `${binding}: both sides activated keys`);
  t.same({ keyId: s?.keyId, key: s?.key }, { keyId: m?.keyId, key: m?.key }, `${binding}: the same key in service at both ends`);
  const slaveKeys = new Map(agents.slave.records(binding).filter((r) => r.key !== '-').map((r) => [r.keyId, r.key]));
  const differ = agents.master.records(binding).filter((r) => r.key !== '-' && slaveKeys.has(r.keyId) && slaveKeys.get(r.keyId) !== r.key);
  t.same(differ, [], `${binding}: no key_ID with different bytes at the two ends`);
}

async function rotationsAt(a: TestAgent, binding: string, n: number, ms = 10_000): Promise<boolean> {
  return until(() => (a.state(binding)?.rotations ?? 0) >= n, ms);
}

t.test('slave agent down: the old key stays until max age, then fail_closed shuts down and fail_open keeps it', async (t) => {
  const before = { closed: agents.master.state('closed')!.current!, open: agents.master.state('open')!.current! };
  await agents.slave.stop();
  t.ok(await until(() => !!agents.master.state('closed')?.expired && !!agents.master.state('open')?.expired, 12_000), 'both bindings expired');
  const closed = agents.master.state('closed')!;
  const open = agents.master.state('open')!;
  t.equal(closed.current?.keyId, before.closed.keyId, 'fail_closed: no other key was put in service meanwhile');
  t.equal(open.current?.keyId, before.open.keyId, 'fail_open: the old key is still the one in service');
  t.match(closed.lastError?.message, /cannot reach|no answer/, `the failing step is recorded: ${closed.lastError?.message}`);
  t.equal(closed.expired?.policy, 'fail_closed');
  t.equal(open.expired?.policy, 'fail_open');
  const age = (Date.parse(closed.expired!.at) - Date.parse(before.closed.activatedAt)) / 1000;
  t.ok(age >= 4, `shut down only after the maximum age (${age.toFixed(1)} s)`);
  const shutdowns = (b: string) => agents.master.records(b).filter((r) => r.step === 'shutdown').length;
  t.equal(shutdowns('closed'), 1, 'fail_closed: the connector was shut down, once');
  t.equal(shutdowns('open'), 0, 'fail_open: the connector was not shut down');
  const lines = agents.master.logs().split('\n');
  t.ok(lines.some((l) => l.includes('"binding":"closed"') && l.includes('failing closed')), 'the log says fail_closed');
  t.ok(lines.some((l) => l.includes('"binding":"open"') && l.includes('failing open, the old key stays in service')), 'the log says fail_open');

  await agents.slave.start();
  const back = agents.master.state('closed')!.rotations;
  t.ok(await rotationsAt(agents.master, 'closed', back + 1), 'rotations resume when the slave is back');
  t.notOk(agents.master.state('closed')?.expired, 'a fresh key lifts fail_closed');
  const recs = agents.master.records('closed');
  t.ok(recs.findIndex((r) => r.step === 'activate' && r.keyId !== before.closed.keyId) > recs.findIndex((r) => r.step === 'shutdown'), 'activated again after the shut-down');
  await inStep(t, 'closed');
  await inStep(t, 'open');
});

t.test('slave restarted between staging and activating: the master goes back to the old key, then rotates afresh', async (t) => {
  agents.master.failAt('crash', 'stage', true);
  t.ok(await until(() => agents.slave.state('crash')?.pending?.step === 'staged' && agents.master.state('crash')?.pending?.step === 'peer_staged', 8_000), 'slave staged, master held before switching');
  const lost = agents.slave.state('crash')!.pending!.keyId;
  const old = agents.master.state('crash')!.current!.keyId;
  await agents.slave.stop();
  await agents.slave.start();
  agents.master.failAt('crash', 'stage', false);
  const n = agents.master.state('crash')!.rotations;
  t.ok(await rotationsAt(agents.master, 'crash', n + 1), 'a rotation completes after that');
  const m = agents.master.records('crash').filter((r) => r.step === 'activate').map((r) => r.keyId);
  t.ok(m.indexOf(old, m.indexOf(lost)) > m.indexOf(lost), 'the master switched to the lost key, then back to the old one');
  t.notOk(agents.slave.records('crash').some((r) => r.step === 'activate' && r.keyId === lost), 'the slave never put the lost key in service');
  t.ok(agents.slave.records('crash').some((r) => r.step === 'retire' && r.keyId === lost), 'the slave retired it');
  await inStep(t, 'crash');
});

t.test('slave restarted after dec_keys, before staging: the key cannot be fetched twice, so the master abandons it', async (t) => {
  agents.slave.failAt('crash', 'stage', true);
  const held = () => agents.slave.state('crash')?.pending?.step === 'fetching' && /^offer .* exited with code 7$/.test(agents.slave.state('crash')?.lastError?.message ?? '');
  t.ok(await until(held, 8_000), 'the slave fetched the key, its connector refused to stage it');
  const fetched = agents.slave.state('crash')!.pending!.keyId;
  await agents.slave.stop();
  await agents.slave.start();
  agents.slave.failAt('crash', 'stage', false);
  const n = agents.master.state('crash')!.rotations;
  t.ok(await rotationsAt(agents.master, 'crash', n + 1), 'a rotation completes after that');
  t.ok(
    agents.master.logs().split('\n').some((l) => l.includes(fetched) && l.includes('the slave cannot get it from its KME')),
    'the master abandoned the key_ID because the slave could not fetch it again',
  );
  for (const side of [agents.master, agents.slave]) {
    t.notOk(side.records('crash').some((r) => r.step === 'activate' && r.keyId === fetched), `${side.side}: that key never went into service`);
  }
  await inStep(t, 'crash');
});

t.test('master restarted before switching: the key_ID is abandoned at both ends and a fresh rotation follows', async (t) => {
  agents.master.failAt('crash', 'stage', true);
  t.ok(await until(() => agents.master.state('crash')?.pending?.step === 'peer_staged', 8_000), 'master held before switching');
  const abandoned = agents.master.state('crash')!.pending!.keyId;
  await agents.master.stop();
  agents.master.failAt('crash', 'stage', false);
  const n = agents.master.state('crash')!.rotations;
  await agents.master.start();
  t.ok(await rotationsAt(agents.master, 'crash', n + 1), 'a rotation completes after the restart');
  for (const side of [agents.master, agents.slave]) {
    t.notOk(side.records('crash').some((r) => r.step === 'activate' && r.keyId === abandoned), `${side.side}: the abandoned key never went into service`);
    t.ok(side.records('crash').some((r) => r.step === 'retire' && r.keyId === abandoned), `${side.side}: retired it`);
  }
  t.match(agents.master.logs(), /rotation abandoned/);
  await inStep(t, 'crash');
});

t.test('master restarted after switching, before the slave confirmed: the slave switches too, then a fresh rotation', async (t) => {
  agents.slave.failAt('crash', 'activate', true);
  const refused = () => /^activate .* exited with code 7$/.test(agents.slave.state('crash')?.lastError?.message ?? '');
  t.ok(await until(() => agents.master.state('crash')?.pending?.step === 'activated' && refused(), 8_000), 'master switched, the slave refused to (its connector failed)');
  const key = agents.master.state('crash')!.pending!.keyId;
  await agents.master.stop();
  agents.slave.failAt('crash', 'activate', false);
  const n = agents.master.state('crash')!.rotations;
  await agents.master.start();
  t.ok(await until(() => agents.slave.records('crash').some((r) => r.step === 'activate' && r.keyId === key), 5_000), 'the slave put the key in service');
  t.ok(await rotationsAt(agents.master, 'crash', n + 2), 'that rotation completes, and another one right after');
  await inStep(t, 'crash');
});

t.test('no key byte in the logs or state files through all of that', async (t) => {
  const keys = ['closed', 'open', 'crash'].flatMap((b) => [...agents.master.records(b), ...agents.slave.records(b)])
    .filter((r) => r.key !== '-')
    .map((r) => Buffer.from(r.key, 'hex'));
  t.same(findLeaks(keys, agents.haystack()), []);
});
