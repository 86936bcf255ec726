import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Connector, ConnectorContext, ConnectorFactory, ConsumerKey } from '../connector.js';
import { ConnectorConfigError } from '../connector.js';
import { keyHexOfLength, keyIdBytesHex } from './key-material.js';
import { writePrivateFile } from './private-file.js';
import { runCommand } from './run-command.js';
import { SettingsReader } from './settings.js';
import { EMPTY_STATE, planActivate, planRetire, planShutDown, planStage, type KeyHex, type StaticPort, type StaticState, type Step } from './static-plan.js';

/** The SAs this connector made, by AN, with key_IDs only: what lets a restarted agent carry on where it stopped. */
export const STATIC_STATE_FILE = 'macsec-static-state.json';

const KNOWN = ['device', 'peer_address', 'peer_port', 'key_bytes', 'netns', 'ip'] as const;

/**
 * MACsec with static SAKs through iproute2: the QKD key is the SAK, the key_ID's 16 bytes its key identifier.
 * Commands go to `ip -batch -` on stdin, so the key is never on a command line (/proc/PID/cmdline is world-readable).
 */
export const macsecStaticFactory: ConnectorFactory = {
  type: 'macsec-static',
  create(settings, context) {
    const read = new SettingsReader(settings);
    read.onlyKnown(KNOWN);
    const address = read.word('peer_address').toLowerCase();
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(address)) throw new ConnectorConfigError('connector.peer_address', 'must be the peer port\'s MAC address, like 52:54:00:12:34:56');
    const port: StaticPort = { device: read.word('device'), peerSci: `port ${read.integer('peer_port', 1, 65535, 1)} address ${address}` };
    const netns = settings.netns === undefined ? null : read.word('netns');
    return new StaticConnector(port, read.keyBytes('key_bytes'), read.word('ip', 'ip'), netns, context);
  },
};

class StaticConnector implements Connector {
  private readonly statePath: string;
  /** One batch at a time: each plan starts from the state the previous one left. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly port: StaticPort,
    private readonly keyBytes: 16 | 32,
    private readonly ip: string,
    private readonly netns: string | null,
    private readonly ctx: ConnectorContext,
  ) {
    this.statePath = join(ctx.workDir, STATIC_STATE_FILE);
  }

  private hex(key: ConsumerKey): KeyHex {
    return { keyId: key.keyId, kidHex: keyIdBytesHex(key.keyId), keyHex: keyHexOfLength(key, this.keyBytes, 'connector.key_bytes') };
  }

  stage(key: ConsumerKey): Promise<void> {
    return this.run('stage', key.keyId, (s) => planStage(this.port, s, this.hex(key)));
  }

  activate(key: ConsumerKey): Promise<void> {
    return this.run('activate', key.keyId, (s) => planActivate(this.port, s, this.hex(key)));
  }

  retire(keyId: string): Promise<void> {
    return this.run('retire', keyId, (s) => planRetire(this.port, s, keyId));
  }

  async shutDown(reason: string): Promise<void> {
    await this.run('shut down', null, () => planShutDown(this.port));
    this.ctx.log.warn({ binding: this.ctx.binding, device: this.port.device, reason }, 'macsec-static: failed closed: the MACsec interface is down');
  }

  async close(): Promise<void> {
    await this.queue.catch(() => {});
  }

  private run(what: string, keyId: string | null, plan: (s: StaticState) => Step[]): Promise<void> {
    const next = this.queue.catch(() => {}).then(() => this.execute(what, keyId, plan));
    this.queue = next;
    return next;
  }

  private async execute(what: string, keyId: string | null, plan: (s: StaticState) => Step[]): Promise<void> {
    const state = await this.load();
    const steps = plan(state);
    if (steps.length === 0) return;
    const args = [...(this.netns ? ['-n', this.netns] : []), '-batch', '-'];
    try {
      await runCommand(this.ip, args, steps.map((s) => s.line).join('\n') + '\n');
    } catch (err) {
      // `ip -batch` stops at the first failing line and names it ("Command failed -:N"): the lines before it ran.
      const line = Number(/Command failed -:(\d+)/.exec((err as Error).message)?.[1] ?? 1);
      await this.save(steps.slice(0, line - 1).reduce((s, step) => step.apply(s), state));
      throw new Error(`macsec-static ${what} on ${this.port.device} failed: ${(err as Error).message}`);
    }
    await this.save(steps.reduce((s, step) => step.apply(s), state));
    this.ctx.log.info({ binding: this.ctx.binding, device: this.port.device, keyId, commands: steps.length }, `macsec-static: ${what} done`);
  }

  private async load(): Promise<StaticState> {
    let text: string;
    try {
      text = await readFile(this.statePath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_STATE;
      throw err;
    }
    try {
      return JSON.parse(text) as StaticState;
    } catch {
      throw new Error(`${this.statePath}: not valid JSON; compare with \`ip macsec show ${this.port.device}\` and fix or remove it`);
    }
  }

  private save(state: StaticState): Promise<void> {
    return writePrivateFile(this.statePath, JSON.stringify(state, null, 2) + '\n');
  }
}
