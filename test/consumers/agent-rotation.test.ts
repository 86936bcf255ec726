import t from 'tap';
import { agentCommand } from '../../src/consumers/agent/cli.js';
import { createLogger } from '../../src/log.js';
import { startAgentPair, until, type AgentPair } from '../helpers/agents.js';
import { findLeaks } from '../helpers/leak-scan.js';
import { PAIR, startTestNetwork, type TestNetwork } from '../helpers/network.js';

// Two real KMEs (paired over a simulated link, each on its own database) and two consumer agents talking mutual
// TLS, each keying an exec connector whose script records what it was handed. Proves the handoff end to end: both
// encryptors get the same key for every key_ID, rotations repeat, each key_ID is in both KMEs' custody log, and no
// key byte reaches an agent log or state file. Two bindings: one hands the key on stdin, one on file descriptor 3.

let net: TestNetwork;
let agents: AgentPair;
t.before(async () => {
  net = await startTestNetwork({ ...PAIR, fill: 100 });
  agents = await startAgentPair(net, [{ name: 'tunnel' }, { name: 'port-fd3', key_via: 'fd3' }]);
});
t.teardown(async () => {
  await agents?.close();
  await net?.close();
});

const activated = (records: Array<{ step: string; keyId: string; key: string }>) => records.filter((r) => r.step === 'activate');

t.test('three rotations: both sides install the same key for every key_ID, in the same order', async (t) => {
  for (const binding of ['tunnel', 'port-fd3']) {
    const done = await until(() => (agents.slave.state(binding)?.rotations ?? 0) >= 3 && (agents.master.state(binding)?.rotations ?? 0) >= 3, 20_000);
    t.ok(done, `${binding}: at least 3 rotations at both agents (master ${agents.master.state(binding)?.rotations}, slave ${agents.slave.state(binding)?.rotations})`);
    const m = activated(agents.master.records(binding));
    const s = activated(agents.slave.records(binding));
    const common = Math.min(m.length, s.length);
    t.ok(common >= 3, `${binding}: ${common} keys activated at both`);
    t.same(s.slice(0, common).map((r) => r.keyId), m.slice(0, common).map((r) => r.keyId), `${binding}: the same key_IDs in the same order`);
    for (let i = 0; i < common; i++) {
      t.match(m[i]!.key, /^[0-9a-f]{64}$/, 'a 256-bit key, as hex');
      t.equal(s[i]!.key, m[i]!.key, `${binding}: key ${m[i]!.keyId} equal at both ends`);
    }
    t.equal(new Set(m.map((r) => r.key)).size, m.length, `${binding}: a different key every rotation`);
    // Every activation was preceded by a stage of the same key at the same side, and old keys were retired.
    for (const side of [agents.master, agents.slave]) {
      const recs = side.records(binding);
      for (const a of activated(recs)) t.ok(recs.some((r) => r.step === 'stage' && r.keyId === a.keyId && r.key === a.key), `${side.side} staged ${a.keyId} first`);
      const retired = recs.filter((r) => r.step === 'retire').map((r) => r.keyId);
      t.ok(activated(recs).slice(0, -1).every((a) => retired.includes(a.keyId)), `${side.side}: each replaced key was retired`);
    }
  }
});

t.test("each key_ID is in both KMEs' custody log", async (t) => {
  const ids = activated(agents.master.records('tunnel')).map((r) => r.keyId);
  for (const kme of ['KME_A', 'KME_B']) {
    const rows = await net.kme(kme).query(
      `SELECT DISTINCT unnest(key_ids)::text AS id FROM audit_event WHERE key_ids && $1::uuid[]`,
      [ids],
    );
    const seen = new Set(rows.map((r) => r.id as string));
    t.same(ids.filter((id) => !seen.has(id)), [], `${kme} audited every key_ID (${ids.length})`);
  }
});

t.test('no key byte in the agent logs or the state files; state files are 0600', async (t) => {
  const keys = [...agents.master.records('tunnel'), ...agents.master.records('port-fd3'), ...agents.slave.records('tunnel')]
    .filter((r) => r.key !== '-')
    .map((r) => Buffer.from(r.key, 'hex'));
  t.ok(keys.length >= 6, `${keys.length} keys to look for`);
  const hay = agents.haystack();
  t.ok(hay.texts.some((h) => h.where === 'master agent log' && h.text.includes('rotation complete')), 'the logs were captured');
  t.same(findLeaks(keys, hay), [], 'no leaks');
  const { statSync } = await import('node:fs');
  const { stateFile } = await import('../../src/consumers/agent/state.js');
  t.equal(statSync(stateFile(agents.master.config.state_dir, 'tunnel')).mode & 0o777, 0o600);
});

t.test('kms agent status --json shows the bindings of a running agent', async (t) => {
  const lines: string[] = [];
  const code = await agentCommand(['status', '--config', agents.master.configFile, '--json'], createLogger({ level: 'silent' }), (l) => lines.push(l));
  t.equal(code, 0);
  const report = JSON.parse(lines.join('\n'));
  t.equal(report.running, true, 'the pid file names this (running) process');
  t.same(report.bindings.map((b: { name: string }) => b.name), ['tunnel', 'port-fd3']);
  const tunnel = report.bindings[0];
  t.match(tunnel, { role: 'master', connector: 'exec', peer: 'AGENT_B' });
  t.match(tunnel.current_key_id, /^[0-9a-f-]{36}$/);
  t.ok(tunnel.key_age_seconds >= 0 && tunnel.key_age_seconds < 30, `age ${tunnel.key_age_seconds}`);
  t.ok(Date.parse(tunnel.next_rotation_at) > Date.now() - 5_000, `next rotation ${tunnel.next_rotation_at}`);
  t.ok(tunnel.rotations >= 3);
  const text: string[] = [];
  await agentCommand(['status', '--config', agents.slave.configFile], createLogger({ level: 'silent' }), (l) => text.push(l));
  t.match(text[0], /^agent running \(pid \d+\)/);
  t.match(text[1], /^BINDING\s+ROLE\s+KEY_ID\s+AGE\s+NEXT ROTATION\s+STATE\s+LAST ERROR$/);
  t.match(text[2], /^tunnel\s+slave\s+[0-9a-f-]{36}\s+\d+s/);
});

t.test('status of a stopped agent comes from its state files', async (t) => {
  await agents.master.stop();
  const lines: string[] = [];
  await agentCommand(['status', '--config', agents.master.configFile, '--json'], createLogger({ level: 'silent' }), (l) => lines.push(l));
  const report = JSON.parse(lines.join('\n'));
  t.equal(report.running, false);
  t.equal(report.bindings[0].current_key_id, agents.master.state('tunnel')?.current?.keyId);
});
