import { existsSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Connector, ConnectorContext, ConnectorFactory, ConsumerKey } from '../connector.js';
import { keyHexOfLength, keyIdBytesHex } from './key-material.js';
import { mkaConfigText, type MkaSettings } from './mka-config.js';
import { writePrivateFile } from './private-file.js';
import { runCommand } from './run-command.js';
import { SettingsReader } from './settings.js';

/** The file wpa_supplicant is started with (`-c`), inside the binding's private work directory. */
export const MKA_CONFIG_FILE = 'wpa_supplicant-mka.conf';

const KNOWN = ['interface', 'ctrl_interface', 'cak_bytes', 'mka_priority', 'macsec_integ_only', 'macsec_replay_protect',
  'macsec_replay_window', 'macsec_port', 'wpa_cli'] as const;

/**
 * MACsec keyed by MKA through a running wpa_supplicant (`-D macsec_linux -i IF -c <workDir>/wpa_supplicant-mka.conf`):
 * CAK = the QKD key, CKN = the key_ID's 16 bytes. A rotation rewrites the config and asks wpa_supplicant to reload
 * it through its control socket (`wpa_cli reconfigure`; Node has no UNIX datagram sockets, and the command
 * carries no secret). wpa_supplicant 2.10 holds one pre-shared CA per port and a reload restarts its MKA
 * participant, so the secured port pauses at each rotation until both ends run the new CAK (docs/macsec.md).
 */
export const macsecMkaFactory: ConnectorFactory = {
  type: 'macsec-mka',
  create(settings, context) {
    const read = new SettingsReader(settings);
    read.onlyKnown(KNOWN);
    const s: MkaSettings = {
      interface: read.word('interface'),
      ctrlInterface: read.word('ctrl_interface', '/run/wpa_supplicant'),
      cakBytes: read.keyBytes('cak_bytes'),
      // Both ends at the default 255 would elect no key server and never get a SAK: give the roles distinct ones.
      mkaPriority: read.integer('mka_priority', 0, 255, context.role === 'master' ? 16 : 32),
      integOnly: read.boolean('macsec_integ_only', false),
      replayProtect: read.boolean('macsec_replay_protect', false),
      replayWindow: read.integer('macsec_replay_window', 0, 2 ** 32 - 1, 0),
      port: read.integer('macsec_port', 1, 65534, 1),
    };
    return new MkaConnector(s, read.word('wpa_cli', 'wpa_cli'), context);
  },
};

class MkaConnector implements Connector {
  private readonly configPath: string;
  /** The key this instance put in service; after a restart the first activate reloads once to be sure. */
  private activeKeyId: string | null = null;

  constructor(
    private readonly s: MkaSettings,
    private readonly wpaCli: string,
    private readonly ctx: ConnectorContext,
  ) {
    this.configPath = join(ctx.workDir, MKA_CONFIG_FILE);
    // wpa_supplicant needs the file to exist when the operator starts it, which may be before the first key.
    if (!existsSync(this.configPath)) writeFileSync(this.configPath, mkaConfigText(ctx.binding, s, null), { mode: 0o600, flag: 'wx' });
  }

  private cakHex(key: ConsumerKey): string {
    return keyHexOfLength(key, this.s.cakBytes, 'connector.cak_bytes');
  }

  /** MKA cannot hold the next CAK beside the current one here: staging checks the key and that wpa_supplicant answers. */
  async stage(key: ConsumerKey): Promise<void> {
    this.cakHex(key);
    keyIdBytesHex(key.keyId);
    const pong = await this.control('ping');
    if (pong !== 'PONG') throw new Error(`wpa_supplicant on ${this.s.interface} did not answer ping (got ${JSON.stringify(pong)})`);
  }

  async activate(key: ConsumerKey): Promise<void> {
    const text = mkaConfigText(this.ctx.binding, this.s, { keyId: key.keyId, cknHex: keyIdBytesHex(key.keyId), cakHex: this.cakHex(key) });
    if (this.activeKeyId === key.keyId && (await readFile(this.configPath, 'utf8').catch(() => '')) === text) return;
    await writePrivateFile(this.configPath, text);
    await this.reload();
    this.activeKeyId = key.keyId;
    this.ctx.log.info({ binding: this.ctx.binding, keyId: key.keyId, interface: this.s.interface }, 'macsec-mka: wpa_supplicant runs the new CAK (CKN = key_ID); MKA re-establishes the secured port');
  }

  /** The config only ever holds the key in service, so the previous one left it at activate. */
  async retire(keyId: string): Promise<void> {
    this.ctx.log.debug({ binding: this.ctx.binding, keyId }, 'macsec-mka: retired key is no longer in the wpa_supplicant config');
  }

  async shutDown(reason: string): Promise<void> {
    await writePrivateFile(this.configPath, mkaConfigText(this.ctx.binding, this.s, null));
    await this.reload();
    this.activeKeyId = null;
    this.ctx.log.warn({ binding: this.ctx.binding, interface: this.s.interface, reason }, 'macsec-mka: failed closed: no MKA participant, the secured port is down');
  }

  async close(): Promise<void> {}

  private async reload(): Promise<void> {
    const answer = await this.control('reconfigure');
    if (answer !== 'OK') throw new Error(`wpa_supplicant on ${this.s.interface} refused to reload ${this.configPath} (answered ${JSON.stringify(answer)}); its log says why`);
  }

  /** One control-interface command through wpa_cli; the commands used here carry no secret. */
  private async control(command: 'ping' | 'reconfigure'): Promise<string> {
    const { stdout } = await runCommand(this.wpaCli, ['-p', this.s.ctrlInterface, '-i', this.s.interface, command], null);
    return stdout.trim();
  }
}
