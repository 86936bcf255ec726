import type { Logger } from 'pino';
import { ConfigError } from '../../config/load.js';
import type { Connector, ConsumerKey } from '../connector.js';
import type { BindingConfig } from './config.js';
import type { KmeClient } from './kme-client.js';
import { readState, writeState, type BindingState } from './state.js';

export interface BindingParts {
  config: BindingConfig;
  stateDir: string;
  connector: Connector;
  kme: KmeClient;
  log: Logger;
}

/**
 * What a master and a slave binding share: the state on disk, the keys in memory, one operation at a time, and the
 * maximum-age policy. Key bytes live only in `keys` (and in the encryptor): a restarted agent has none, and the
 * steps it resumes are built for that (docs/agent.md, "Crash points").
 */
export abstract class Binding {
  readonly name: string;
  protected state: BindingState;
  /** Bytes of the keys this process fetched and still needs (the pending key, the current and previous ones). */
  protected readonly keys = new Map<string, ConsumerKey>();
  protected readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  private expiryTimer?: NodeJS.Timeout;
  protected closed = false;

  constructor(protected readonly parts: BindingParts) {
    this.name = parts.config.name;
    this.log = parts.log.child({ binding: this.name });
    const saved = readState(parts.stateDir, this.name);
    if (saved && saved.role !== parts.config.role) {
      throw new ConfigError(`binding ${this.name}: its state (${parts.stateDir}) was written as ${saved.role}, the config says ${parts.config.role}; remove the state file to start afresh`);
    }
    this.state = saved ?? { version: 1, binding: this.name, role: parts.config.role, rotations: 0, updatedAt: new Date().toISOString() };
  }

  get config(): BindingConfig {
    return this.parts.config;
  }

  get connector(): Connector {
    return this.parts.connector;
  }

  /** Starts the binding's timers; resumes what a previous run left half done. */
  async start(): Promise<void> {
    const every = Math.min(5_000, Math.max(100, (this.config.max_age_seconds * 1000) / 20));
    this.expiryTimer = setInterval(() => {
      this.serial(() => this.checkExpiry()).catch((err: Error) => this.log.error({ error: err.message }, 'applying on_expiry failed; trying again'));
    }, every);
    this.expiryTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.expiryTimer);
    await this.queue.catch(() => undefined);
    this.parts.kme.close();
  }

  /** Runs `fn` after every operation queued before it: state changes never interleave. */
  protected serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  protected save(patch: Partial<BindingState>): void {
    this.state = { ...this.state, ...patch };
    // Absent fields are dropped from the file rather than written as null.
    for (const k of Object.keys(patch) as Array<keyof BindingState>) if (patch[k] === undefined) delete this.state[k];
    writeState(this.parts.stateDir, this.state);
  }

  protected recordError(message: string): void {
    this.log.warn({ keyId: this.state.pending?.keyId, error: message }, 'rotation step failed; the current key stays in service');
    this.save({ lastError: { at: new Date().toISOString(), message } });
  }

  /**
   * Puts `key` in service at this side's encryptor and records it: the key it replaces becomes `previous`, a policy
   * applied to the old key is lifted (activating brings traffic back after a fail-closed shut-down).
   */
  protected async switchTo(key: ConsumerKey, patch: Partial<BindingState> = {}): Promise<void> {
    await this.connector.activate(key);
    if (this.state.expired) this.log.info({ keyId: key.keyId }, `a fresh key is in service: the ${this.state.expired.policy} state is over`);
    const now = new Date().toISOString();
    this.save({
      ...patch,
      previous: this.state.current,
      current: { keyId: key.keyId, activatedAt: now },
      expired: undefined,
    });
  }

  /** Drops the bytes of every key but these. */
  protected keepOnly(...keyIds: Array<string | undefined>): void {
    for (const id of [...this.keys.keys()]) if (!keyIds.includes(id)) this.keys.delete(id);
  }

  /** The key in service is older than max_age_seconds: apply on_expiry once, with a log line that says which. */
  private async checkExpiry(): Promise<void> {
    const current = this.state.current;
    if (this.closed || !current || this.state.expired) return;
    const ageSeconds = (Date.now() - Date.parse(current.activatedAt)) / 1000;
    if (ageSeconds <= this.config.max_age_seconds) return;
    const policy = this.config.on_expiry;
    const facts = { keyId: current.keyId, ageSeconds: Math.round(ageSeconds), maxAgeSeconds: this.config.max_age_seconds, policy };
    if (policy === 'fail_closed') {
      await this.connector.shutDown(`key ${current.keyId} is older than ${this.config.max_age_seconds} s and no fresh key could be installed`);
      this.log.error(facts, 'key past its maximum age: failing closed, the connector shut the protected traffic down');
    } else {
      this.log.error(facts, 'key past its maximum age: failing open, the old key stays in service');
    }
    this.save({ expired: { at: new Date().toISOString(), policy } });
  }
}
