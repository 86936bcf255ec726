import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startAgent } from '../../src/consumers/agent/agent.js';
import { agentCommand } from '../../src/consumers/agent/cli.js';
import { loadAgentConfig, parseAgentConfig } from '../../src/consumers/agent/config.js';
import { PeerClient } from '../../src/consumers/agent/peer-link.js';
import { ConfigError } from '../../src/config/load.js';
import { connectorTypes } from '../../src/consumers/registry.js';
import { ensureDemoPki, type DemoPki } from '../../src/pki/dev-pki.js';
import { createLogger } from '../../src/log.js';
import { freePort } from '../../src/ports.js';

// The agent's config file and boot checks (no KME needed): errors name the bad field or file, an unknown connector
// type is refused naming the known ones, and the agent-to-agent listener only answers its binding's peer agent —
// real TLS sockets with certificates of a CA of the agents.

const dir = mkdtempSync(join(tmpdir(), 'kms-agent-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const silent = createLogger({ level: 'silent' });
let pki: DemoPki;
t.before(async () => {
  pki = await ensureDemoPki(join(dir, 'pki'), { kmeIds: ['AGENT_A', 'AGENT_B', 'AGENT_X'], saeIds: ['SAE_B'], strangerIds: [] });
});

const binding = (over: Record<string, unknown> = {}) => ({
  name: 'tunnel',
  role: 'slave',
  connector: { type: 'exec', command: '/bin/true' },
  sae: { id: 'SAE_B', cert: 'sae.crt', key: 'sae.key' },
  kme: { url: 'https://127.0.0.1:1', ca: 'ca.crt' },
  peer: { url: 'https://localhost:1', identity: 'AGENT_A', sae_id: 'SAE_A' },
  ...over,
});
const config = (over: Record<string, unknown> = {}, b: Record<string, unknown> = {}) => ({
  tls: { cert: 'a.crt', key: 'a.key', ca: 'ca.crt' },
  state_dir: 'state',
  bindings: [binding(b)],
  ...over,
});

function refuses(t: Test, raw: unknown, message: RegExp): void {
  t.throws(() => parseAgentConfig(raw, 'agent.json'), message, String(message));
}

t.test('defaults, and relative paths resolve against the file', async (t) => {
  const file = join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify(config()));
  const c = loadAgentConfig(file);
  t.match(c.listen, { host: '0.0.0.0', port: 7443 });
  t.equal(c.state_dir, join(dir, 'state'));
  t.equal(c.bindings[0]!.sae.cert, join(dir, 'sae.crt'));
  t.match(c.bindings[0], { key_size: 256, rotation_seconds: 3600, max_age_seconds: 7200, retry_seconds: 10, on_expiry: 'fail_closed' });
});

t.test('errors name the bad field or file', async (t) => {
  refuses(t, config({}, { role: 'boss' }), /\/bindings\/0\/role: must be "master" or "slave"/);
  refuses(t, config({}, { on_expiry: 'maybe' }), /\/bindings\/0\/on_expiry: must be "fail_closed" or "fail_open"/);
  refuses(t, config({}, { rotation_seconds: 600, max_age_seconds: 60 }), /\/bindings\/0\/max_age_seconds: must be at least rotation_seconds \(60 < 600\)/);
  refuses(t, config({}, { key_size: 100 }), /\/bindings\/0\/key_size/);
  refuses(t, config({}, { name: 'a/b' }), /\/bindings\/0\/name/);
  refuses(t, config({}, { kme: { url: 'http://kme', ca: 'ca.crt' } }), /\/bindings\/0\/kme\/url/);
  refuses(t, config({}, { peer: { url: 'https://b' } }), /\/bindings\/0\/peer: must have required properties? identity/);
  refuses(t, config({ bindings: [binding(), binding()] }), /\/bindings\/1\/name: a second binding named tunnel/);
  refuses(t, config({ bindings: [] }), /\/bindings: /);
  refuses(t, config({ extra: 1 }), /\/: .*additional/i);
  t.throws(() => loadAgentConfig(join(dir, 'none.json')), /cannot read agent config file .*none\.json: ENOENT/);
  writeFileSync(join(dir, 'bad.json'), '{ nope');
  t.throws(() => loadAgentConfig(join(dir, 'bad.json')), /bad\.json is not valid JSON/);
});

t.test('an unknown connector type stops the boot, naming it and the known types', async (t) => {
  const c = parseAgentConfig(config({ state_dir: join(dir, 's1') }, { connector: { type: 'ipsec-magic' } }));
  const err = await startAgent(c, silent).catch((e: Error) => e);
  t.ok(err instanceof ConfigError, 'a ConfigError (printed without a stack)');
  t.match((err as Error).message, /\/bindings\/0\/connector\/type: unknown connector type "ipsec-magic"; known: /);
  t.ok(connectorTypes().includes('exec'));
  t.ok((err as Error).message.endsWith(connectorTypes().join(', ')), (err as Error).message);
  const bad = parseAgentConfig(config({ state_dir: join(dir, 's2') }, { connector: { type: 'exec', command: 'relative.sh' } }));
  await t.rejects(startAgent(bad, silent), { message: /\/bindings\/0\/connector\/command: must be the absolute path/ });
});

t.test('a state file that is not one, or of the other role, stops the boot naming it', async (t) => {
  const stateDir = join(dir, 's3');
  const c = parseAgentConfig(
    config({ state_dir: stateDir, tls: { ...pki.kmes.AGENT_B!, ca: pki.ca } }, { sae: { id: 'SAE_B', ...pki.saes.SAE_B! }, kme: { url: 'https://127.0.0.1:1', ca: pki.ca } }),
  );
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(join(stateDir, 'tunnel.state.json'), '{ half');
  await t.rejects(startAgent(c, silent), new ConfigError(`agent state ${join(stateDir, 'tunnel.state.json')} is not valid JSON (remove it to start the binding afresh)`));
  writeFileSync(join(stateDir, 'tunnel.state.json'), JSON.stringify({ version: 1, binding: 'tunnel', role: 'master', rotations: 0 }));
  await t.rejects(startAgent(c, silent), { name: 'ConfigError', message: /binding tunnel: its state .* was written as master, the config says slave/ });
});

t.test('the CLI: usage errors, and status of an agent that never ran', async (t) => {
  await t.rejects(agentCommand([], silent, () => undefined), { message: /--config FILE is required/ });
  const file = join(dir, 'never.json');
  writeFileSync(file, JSON.stringify(config({ state_dir: join(dir, 'never') })));
  const lines: string[] = [];
  t.equal(await agentCommand(['status', '--config', file, '--json'], silent, (l) => lines.push(l)), 0);
  t.match(JSON.parse(lines.join('\n')), { running: false, bindings: [{ name: 'tunnel', current_key_id: null, rotations: 0, last_error: null }] });
});

t.test("the agents' listener answers only its binding's peer, and the caller checks the listener's CN", async (t) => {
  const port = await freePort();
  const slave = parseAgentConfig({
    listen: { host: '127.0.0.1', port },
    tls: { ...pki.kmes.AGENT_B!, ca: pki.ca },
    state_dir: join(dir, 'slave'),
    bindings: [binding({ sae: { id: 'SAE_B', ...pki.saes.SAE_B! }, kme: { url: 'https://127.0.0.1:1', ca: pki.ca } })],
  });
  const agent = await startAgent(slave, silent);
  t.teardown(() => agent.close());
  const caller = (me: string, expect: string) =>
    new PeerClient(parseAgentConfig(config({ tls: { ...pki.kmes[me]!, ca: pki.ca } })), {
      ...slave.bindings[0]!,
      peer: { url: `https://localhost:${port}`, identity: expect, sae_id: 'SAE_B' },
    });
  const id = '0d6a3f38-4bb0-4c3e-9d0e-6f3b2b0c8d11';
  const stranger = caller('AGENT_X', 'AGENT_B');
  await t.rejects(stranger.send('offer', id), { status: 403, message: /binding tunnel expects its peer agent AGENT_A/ });
  stranger.close();
  const fooled = caller('AGENT_A', 'AGENT_Z');
  await t.rejects(fooled.send('offer', id), { message: /certificate is AGENT_B, not AGENT_Z/ });
  fooled.close();
  // The right pair gets through to the binding, whose KME is unreachable here: a 503 that says so.
  const master = caller('AGENT_A', 'AGENT_B');
  await t.rejects(master.send('offer', id), { status: 503, message: /cannot reach https:\/\/127\.0\.0\.1:1/ });
  await t.rejects(master.send('offer', 'not-a-uuid'), { status: 400, message: /key_ID: must be a UUID/ });
  master.close();
});
