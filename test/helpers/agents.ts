import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAgentConfig, type AgentConfig } from '../../src/consumers/agent/config.js';
import { startAgent, type RunningAgent } from '../../src/consumers/agent/agent.js';
import { readState, type BindingState } from '../../src/consumers/agent/state.js';
import { ensureDemoPki } from '../../src/pki/dev-pki.js';
import { freePort } from '../../src/ports.js';
import type { Haystack } from './leak-scan.js';
import { capturingLogger } from './logs.js';
import type { TestNetwork } from './network.js';

/**
 * Two consumer agents in this process, keyed by a two-KME test network: AGENT_A (master, SAE_A at KME_A) and
 * AGENT_B (slave, SAE_B at KME_B), each binding keying an exec connector whose script records what it was given
 * (step, key_ID and the key as hex) in a folder of the test. The agents' certificates come from a CA of their own,
 * not the KMEs' (docs/agent.md recommends that).
 */
export interface BindingOptions {
  name: string;
  on_expiry?: 'fail_closed' | 'fail_open';
  rotation_seconds?: number;
  max_age_seconds?: number;
  retry_seconds?: number;
  key_via?: 'stdin' | 'fd3';
}

export interface Recorded {
  step: string;
  keyId: string;
  /** The key as hex, for stage and activate; '-' otherwise. */
  key: string;
}

export interface TestAgent {
  side: 'master' | 'slave';
  config: AgentConfig;
  configFile: string;
  running?: RunningAgent;
  logs: () => string;
  start: () => Promise<void>;
  stop: () => Promise<void>;
  /** What this side's connector script was told for a binding, in order. */
  records: (binding: string) => Recorded[];
  /** Makes this side's script fail (exit 7) at `step` of `binding` until called again with false. */
  failAt: (binding: string, step: string, on: boolean) => void;
  state: (binding: string) => BindingState | undefined;
}

export interface AgentPair {
  dir: string;
  master: TestAgent;
  slave: TestAgent;
  /** Agent logs and every file of both state directories, for a leak scan. */
  haystack: () => Haystack;
  close: () => Promise<void>;
}

const RECORDER = `#!/bin/sh
# The test's encryptor: appends "STEP KEY_ID KEY" to RECORD_DIR/BINDING.log.
# $1 = record dir, $2 = where the key comes (stdin or fd3), $3 = step, $4 = key_ID.
dir=$1 via=$2 step=$3 id=\${4:--} key=-
if [ "$step" = stage ] || [ "$step" = activate ]; then
  if [ "$via" = fd3 ]; then key=$(cat <&3); else key=$(cat); fi
fi
if [ -e "$dir/$KMS_BINDING.fail-$step" ]; then exit 7; fi
echo "$step $id $key" >> "$dir/$KMS_BINDING.log"
`;

export async function startAgentPair(net: TestNetwork, bindings: BindingOptions[]): Promise<AgentPair> {
  const dir = mkdtempSync(join(tmpdir(), 'kms-agents-'));
  const pki = await ensureDemoPki(join(dir, 'agent-pki'), { kmeIds: ['AGENT_A', 'AGENT_B'], saeIds: [], strangerIds: [] });
  const ports = { master: await freePort(), slave: await freePort() };
  const kmeUrl = (id: string) => `https://localhost:${net.kme(id).config.listen.port}`;
  const make = (side: 'master' | 'slave'): TestAgent => {
    const [me, peer, sae, peerSae, kme] = side === 'master' ? ['AGENT_A', 'AGENT_B', 'SAE_A', 'SAE_B', 'KME_A'] : ['AGENT_B', 'AGENT_A', 'SAE_B', 'SAE_A', 'KME_B'];
    const records = join(dir, 'records', side);
    mkdirSync(records, { recursive: true });
    const script = join(dir, `recorder-${side}.sh`);
    writeFileSync(script, RECORDER);
    chmodSync(script, 0o755);
    const raw = {
      listen: { host: '127.0.0.1', port: ports[side] },
      tls: { ...pki.kmes[me]!, ca: pki.ca },
      state_dir: join(dir, 'state', side),
      bindings: bindings.map((b) => ({
        name: b.name,
        role: side,
        connector: { type: 'exec', command: script, args: [records, b.key_via ?? 'stdin'], key_via: b.key_via ?? 'stdin' },
        sae: { id: sae, ...net.pki.saes[sae]! },
        kme: { url: kmeUrl(kme), ca: net.pki.ca },
        peer: { url: `https://localhost:${side === 'master' ? ports.slave : ports.master}`, identity: peer, sae_id: peerSae },
        rotation_seconds: b.rotation_seconds ?? 1,
        max_age_seconds: b.max_age_seconds ?? 30,
        retry_seconds: b.retry_seconds ?? 0.3,
        on_expiry: b.on_expiry ?? 'fail_closed',
      })),
    };
    const config = parseAgentConfig(raw);
    const configFile = join(dir, `agent-${side}.json`);
    writeFileSync(configFile, JSON.stringify(raw, null, 2));
    const captured: Array<() => string> = [];
    const agent: TestAgent = {
      side,
      config,
      configFile,
      logs: () => captured.map((text) => text()).join(''),
      start: async () => {
        const { log, text } = capturingLogger();
        captured.push(text);
        agent.running = await startAgent(config, log);
      },
      stop: async () => {
        await agent.running?.close();
        agent.running = undefined;
      },
      records: (binding) => {
        const file = join(records, `${binding}.log`);
        if (!existsSync(file)) return [];
        return readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((line) => {
            const [step = '', keyId = '', key = ''] = line.split(' ');
            return { step, keyId, key };
          });
      },
      failAt: (binding, step, on) => {
        const flag = join(records, `${binding}.fail-${step}`);
        if (on) writeFileSync(flag, '');
        else rmSync(flag, { force: true });
      },
      state: (binding) => readState(config.state_dir, binding),
    };
    return agent;
  };
  const master = make('master');
  const slave = make('slave');
  await slave.start();
  await master.start();
  return {
    dir,
    master,
    slave,
    haystack: () => ({
      texts: [
        { where: 'master agent log', text: master.logs() },
        { where: 'slave agent log', text: slave.logs() },
        ...[master, slave].flatMap((a) => filesUnder(a.config.state_dir).map((f) => ({ where: f, text: readFileSync(f, 'utf8') }))),
      ],
      bytes: [master, slave].flatMap((a) => filesUnder(a.config.state_dir).map((f) => ({ where: f, bytes: readFileSync(f) }))),
    }),
    close: async () => {
      await master.stop().catch(() => undefined);
      await slave.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

/** Polls `fn` until it holds or `ms` pass; returns whether it held. */
export async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
