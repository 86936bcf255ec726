import type { Connector, ConnectorContext, ConnectorFactory, ConsumerKey } from '../connector.js';
import { parseStrongswanSettings, type StrongswanSettings } from './settings.js';
import { ViciClient, ViciCommandError, ViciError } from './vici.js';
import type { ViciSectionIn } from './vici-codec.js';

/**
 * The QKD key as strongSwan's IKEv2 postquantum preshared key (RFC 8784), over VICI. The sequence below is the one
 * that keeps traffic flowing on strongSwan 5.9.8 (docs/strongswan.md says why each step is there):
 *
 *   stage     both: load-shared {PPK, id = owner = "qkd-<key_ID>"};  slave also (re)loads the connection with
 *             ppk_id = %any, so that its responder accepts whichever PPK_ID it holds a PPK for.
 *   activate  master: load-conn with ppk_id = "qkd-<key_ID>", initiate the child SA (a fresh IKE SA: the PPK only
 *             enters at IKE_AUTH, and a reauth of the old SA would still send the old PPK_ID), then terminate the
 *             connection's other IKE SAs. On failure the previous ppk_id is loaded back and the old SA keeps
 *             running. slave: makes sure the PPK and the connection are loaded (after a shutDown).
 *   retire    both: unload-shared (the IKE SAs keyed with it live on until replaced; the PPK only matters at IKE_AUTH).
 *   shutDown  both: unload the connection, terminate its IKE SAs, unload the PPKs this connector loaded.
 */
export const strongswanConnector: ConnectorFactory = {
  type: 'strongswan',
  create: (settings, context) => new StrongswanConnector(parseStrongswanSettings(settings), context),
};

/** The PPK_ID both agents derive from the key_ID: the peer's charon finds the PPK by it. */
export function ppkIdOf(keyId: string): string {
  return `qkd-${keyId}`;
}

/** What the slave's connection names: its responder then accepts any PPK_ID it holds a PPK for (current or staged). */
export const RESPONDER_PPK_ID = '%any';

export class StrongswanConnector implements Connector {
  private client: ViciClient | undefined;
  /** Master: the IKE SA this process brought up with a key, so that a repeated activate is a no-op. */
  private active: { keyId: string; ikeId: string } | undefined;
  /** PPK ids this process loaded and has not retired: what a shutDown unloads. */
  private readonly loaded = new Set<string>();

  constructor(
    private readonly settings: StrongswanSettings,
    private readonly context: ConnectorContext,
  ) {}

  async stage(key: ConsumerKey): Promise<void> {
    await this.loadPpk(key);
    if (this.context.role === 'slave') await this.loadConnection(RESPONDER_PPK_ID);
    this.context.log.info({ binding: this.context.binding, keyId: key.keyId, ppkId: ppkIdOf(key.keyId) }, 'strongSwan PPK staged');
  }

  async activate(key: ConsumerKey): Promise<void> {
    await this.loadPpk(key);
    if (this.context.role === 'slave') {
      await this.loadConnection(RESPONDER_PPK_ID);
      this.context.log.info({ binding: this.context.binding, keyId: key.keyId }, 'strongSwan responder accepts the new PPK');
      return;
    }
    if (this.active?.keyId === key.keyId && (await this.ikeSas()).some((sa) => sa.id === this.active?.ikeId && sa.state === 'ESTABLISHED')) return;

    const previous = await this.loadedPpkId();
    await this.loadConnection(ppkIdOf(key.keyId));
    let ikeId: string;
    try {
      ikeId = await this.initiate();
    } catch (err) {
      // keep the connection naming the PPK the running IKE SA was made with, so a restart of it still succeeds
      if (previous) await this.loadConnection(previous).catch(() => undefined);
      throw err;
    }
    // The new key is in service from here; a failed clean-up below leaves an extra IKE SA, not a half switch.
    this.active = { keyId: key.keyId, ikeId };
    // Every other IKE SA of this connection was authenticated with an older PPK: its child SAs are replaced by
    // the new ones (same traffic selectors), so closing it costs no packets.
    const older = (await this.ikeSas()).filter((sa) => sa.id !== ikeId);
    for (const sa of older) await this.terminate(sa.id);
    this.context.log.info(
      { binding: this.context.binding, keyId: key.keyId, ikeSa: ikeId, closed: older.map((sa) => sa.id) },
      'strongSwan tunnel re-authenticated with the new PPK',
    );
  }

  async retire(keyId: string): Promise<void> {
    const id = ppkIdOf(keyId);
    await (await this.vici()).call('unload-shared', { id });
    this.loaded.delete(id);
    this.context.log.info({ binding: this.context.binding, keyId, ppkId: id }, 'strongSwan PPK retired');
  }

  async shutDown(reason: string): Promise<void> {
    const vici = await this.vici();
    if ((await this.loadedPpkId()) !== undefined) await vici.call('unload-conn', { name: this.settings.connection });
    for (const sa of await this.ikeSas()) await this.terminate(sa.id);
    for (const id of [...this.loaded]) {
      await vici.call('unload-shared', { id });
      this.loaded.delete(id);
    }
    this.active = undefined;
    this.context.log.warn({ binding: this.context.binding, reason }, 'strongSwan tunnel shut down (fail closed)');
  }

  async close(): Promise<void> {
    await this.client?.close();
    this.client = undefined;
  }

  /** Idempotent: load-shared replaces a secret of the same id. */
  private async loadPpk(key: ConsumerKey): Promise<void> {
    if (key.key.length === 0) throw new ViciError(`key ${key.keyId} is empty`);
    const id = ppkIdOf(key.keyId);
    await (await this.vici()).call('load-shared', { id, type: 'PPK', data: key.key, owners: [id] });
    this.loaded.add(id);
  }

  /** Loads the operator's definition with our ppk_id; charon keeps its IKE SAs running on a reload. */
  private async loadConnection(ppkId: string): Promise<void> {
    const body = { ...this.settings.definition, ppk_id: ppkId, ppk_required: true };
    await (await this.vici()).call('load-conn', { [this.settings.connection]: body });
  }

  /** The ppk_id of the connection as charon holds it now, or undefined when it is not loaded. */
  private async loadedPpkId(): Promise<string | undefined> {
    const { events } = await (await this.vici()).stream('list-conns', { ike: this.settings.connection }, 'list-conn');
    const conn = events.map((e) => e[this.settings.connection]).find((c) => c !== undefined);
    if (conn === undefined || typeof conn !== 'object' || Array.isArray(conn)) return undefined;
    return typeof conn.ppk_id === 'string' ? conn.ppk_id : '';
  }

  /**
   * Initiates the child SA and returns the unique id of the IKE SA that carries it (from charon's control log).
   * When an IKE SA made with this very connection definition (so with this PPK) already carries the child, charon
   * reuses it and refuses a duplicate CHILD_SA: that IKE SA is the answer (an activate repeated after a restart).
   */
  private async initiate(): Promise<string> {
    const { child, connection, initiateTimeoutMs } = this.settings;
    let ikeId: string | undefined;
    let last = '';
    let duplicate = false;
    try {
      await (await this.vici()).stream(
        'initiate',
        { child, ike: connection, timeout: initiateTimeoutMs, 'init-limits': false, loglevel: 1 },
        'control-log',
        {
          timeoutMs: initiateTimeoutMs + 5000,
          onEvent: (e) => {
            if (typeof e['ikesa-uniqueid'] === 'string') ikeId = e['ikesa-uniqueid'];
            if (typeof e.msg === 'string') last = e.msg;
            if (/due to existing duplicate/.test(last)) duplicate = true;
          },
        },
      );
    } catch (err) {
      if (duplicate && ikeId && err instanceof ViciCommandError) return ikeId;
      // charon's own last words ("received AUTHENTICATION_FAILED notify error") say more than "initiate failed"
      if (err instanceof ViciCommandError && last) throw new ViciCommandError('initiate', `${err.errmsg} (charon: ${last})`);
      throw err;
    }
    if (!ikeId) throw new ViciError(`initiate of ${connection}/${child} succeeded but charon named no IKE SA`);
    return ikeId;
  }

  private async ikeSas(): Promise<Array<{ id: string; state: string }>> {
    const { events } = await (await this.vici()).stream('list-sas', { ike: this.settings.connection, noblock: true }, 'list-sa');
    return events.flatMap((e) => {
      const sa = e[this.settings.connection];
      if (sa === undefined || typeof sa !== 'object' || Array.isArray(sa)) return [];
      const s = sa as ViciSectionIn;
      return typeof s.uniqueid === 'string' ? [{ id: s.uniqueid, state: String(s.state) }] : [];
    });
  }

  /** Idempotent: an IKE SA that is already gone (the peer closed it) is fine. */
  private async terminate(ikeId: string): Promise<void> {
    try {
      await (await this.vici()).call('terminate', { 'ike-id': ikeId, timeout: 5000 }, 10_000);
    } catch (err) {
      if (!(err instanceof ViciCommandError && /no matching SAs/i.test(err.errmsg))) throw err;
    }
  }

  /** One VICI connection, opened again when charon restarted or a request timed out. */
  private async vici(): Promise<ViciClient> {
    if (!this.client || this.client.closed) this.client = await ViciClient.connect(this.settings.viciSocket);
    return this.client;
  }
}
