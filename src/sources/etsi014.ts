import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { ConfigError } from '../config/load.js';
import type { Etsi014SourceConfig } from '../config/schema.js';
import { postQuantumTls } from '../tls.js';
import {
  DeviceKeysNotReadyError,
  DeviceUnavailableError,
  type DeviceFigures,
  type DeviceKey,
  type DeviceRef,
  type LinkSource,
  type SourceContext,
} from './link-source.js';

/**
 * A QKD device that serves ETSI GS QKD 014 itself (ID Quantique, Toshiba, `kms sim`): this KME is the device's
 * SAE, over mutual TLS. The primary takes new keys with enc_keys; the secondary fetches the same keys from its own
 * device with dec_keys, by the key_IDs the primary announced. One device key is one block (`size` = blockBits).
 *
 * Contract details:
 * - An ETSI 014 device hands a key out once. What `fetch` got is kept in memory, by ref, until `release` or
 *   `close`, so a fetch retried after a failed store gets the same bytes without asking the device again.
 * - `fetch` calls are serialised: two overlapping fetches of one ref would make the device refuse the second.
 * - dec_keys is all or nothing: `DeviceKeysNotReadyError` names the refs the device does not know, found by asking
 *   again for halves (a few extra calls, bounded); the keys it does know are fetched and held meanwhile.
 * - A 503 from enc_keys is ambiguous (devices use it both for "no key yet" and for faults): if the device still
 *   answers its status call it is up and simply has no key for us (`[]`); otherwise it is unavailable.
 * - Material is never logged nor put in an error message. JSON strings parsed from an answer cannot be wiped
 *   (immutable V8 strings); the raw answer bytes and every decoded key buffer this driver owns are.
 */
export async function createEtsi014Source(config: Etsi014SourceConfig, ctx: SourceContext): Promise<LinkSource> {
  const read = (field: 'ca' | 'cert' | 'key') => {
    try {
      return readFileSync(config[field]);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new ConfigError(`/links/${ctx.linkId}/source/${field}: cannot read ${config[field]}: ${why}`);
    }
  };
  return new Etsi014Device(config, ctx, { ca: read('ca'), cert: read('cert'), key: read('key') });
}

interface Limits {
  /** The device's max_key_per_request (Infinity when it does not say). */
  perRequest: number;
  /** The device's max_key_count: asking for more could never succeed. */
  maxCount: number;
}

interface Answer {
  status: number;
  body: unknown;
}

/** Extra dec_keys calls one fetch may spend to tell unknown refs from known ones (see decKeys). */
const SPLIT_CALLS = 16;
/** Room for one key in a JSON container: base64 of the key, a UUID and some framing, generously. */
const ANSWER_BYTES_PER_KEY = 512;
const SMALL_ANSWER_BYTES = 64 * 1024;

export class Etsi014Device implements LinkSource {
  readonly description: string;
  private readonly agent: Agent;
  private readonly base: URL;
  private readonly blockBytes: number;
  private readonly peer: string;
  /** Material fetched from the device and not yet released: it cannot be fetched twice. */
  private readonly held = new Map<string, Buffer>();
  private limits: Limits | undefined;
  private fetching: Promise<unknown> = Promise.resolve();
  private up = true;
  private lastOutage: DeviceFigures['lastOutage'];
  private outages = 0;
  private closed = false;
  private warnedNoLimit = false;

  constructor(
    private readonly config: Etsi014SourceConfig,
    private readonly ctx: SourceContext,
    tls: { ca: Buffer; cert: Buffer; key: Buffer },
  ) {
    this.base = new URL(config.url.endsWith('/') ? config.url : `${config.url}/`);
    this.blockBytes = ctx.blockBits / 8;
    this.peer = encodeURIComponent(config.peer_sae_id);
    // One keep-alive agent: the device is called many times a second, a handshake each time would dominate.
    this.agent = new Agent({ keepAlive: true, maxSockets: 4, minVersion: 'TLSv1.2', ...postQuantumTls, ...tls });
    this.description = `ETSI GS QKD 014 device at ${config.url} (link ${ctx.linkId}, peer SAE ${config.peer_sae_id}, ${ctx.role})`;
  }

  async take(maxBlocks: number): Promise<DeviceKey[]> {
    this.checkOpen();
    if (maxBlocks < 1) return [];
    const limits = await this.readLimits();
    const n = Math.min(this.config.keys_per_request, maxBlocks, limits.perRequest, limits.maxCount);
    const answer = await this.call('GET', `enc_keys?number=${n}&size=${this.ctx.blockBits}`, undefined, n);
    if (answer.status === 503) return this.noKeyOrDown(answer);
    if (answer.status !== 200) throw this.down(`the device answered ${answer.status} to enc_keys: ${messageOf(answer)}`);
    const keys = this.parseKeys(answer.body, 'enc_keys');
    const problem =
      keys.length > n
        ? `${keys.length} keys for number=${n}`
        : new Set(keys.map((k) => k.id.toLowerCase())).size !== keys.length
          ? 'the same key_ID twice'
          : undefined;
    if (problem) {
      keys.forEach((k) => k.material.fill(0));
      throw this.misbehaves('enc_keys', problem);
    }
    this.markUp();
    return keys.map((k) => ({ ref: k.id, blocks: 1, material: k.material }));
  }

  fetch(refs: ReadonlyArray<DeviceRef>): Promise<Buffer[]> {
    const run = this.fetching.then(() => this.fetchNow(refs));
    this.fetching = run.catch(() => undefined);
    return run;
  }

  async release(refs: ReadonlyArray<string>): Promise<void> {
    for (const ref of refs) {
      this.held.get(ref)?.fill(0);
      this.held.delete(ref);
    }
  }

  figures(): DeviceFigures {
    return { up: this.up, outages: this.outages, ...(this.lastOutage ? { lastOutage: this.lastOutage } : {}) };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const material of this.held.values()) material.fill(0);
    this.held.clear();
    this.agent.destroy();
  }

  private async fetchNow(refs: ReadonlyArray<DeviceRef>): Promise<Buffer[]> {
    this.checkOpen();
    const odd = refs.find((r) => r.blocks !== 1);
    if (odd) {
      throw new Error(
        `link ${this.ctx.linkId}: device key ${odd.ref} was announced as ${odd.blocks} blocks, but an ETSI 014 device key ` +
          'is exactly one block: the announcement does not match this driver (both ends need etsi014 sources with the same block size)',
      );
    }
    const missing = [...new Set(refs.map((r) => r.ref))].filter((ref) => !this.held.has(ref));
    if (missing.length > 0) {
      const per = Math.min((await this.readLimits()).perRequest, 10_000);
      const unknown: string[] = [];
      const budget = { calls: SPLIT_CALLS };
      // Chunks that succeed stay held even if a later one fails: the device will not hand them out again.
      for (let i = 0; i < missing.length; i += per) unknown.push(...(await this.decKeys(missing.slice(i, i + per), budget)));
      if (unknown.length > 0) {
        throw new DeviceKeysNotReadyError(`link ${this.ctx.linkId}: the device does not know ${unknown.length} of these keys (yet)`, unknown);
      }
    }
    // Copies: the caller owns (and may wipe) what it gets; the held copy must survive for a retry.
    return refs.map((r) => Buffer.from(this.held.get(r.ref)!));
  }

  /**
   * Fetches and holds these keys; returns the refs the device does not know. dec_keys is all or nothing, so a
   * "not found" for several refs says nothing about which: the refs are split in halves and asked again (within
   * `budget` calls), so that one lost key does not keep the rest of an announcement from ever being stored.
   * Refs left undecided when the budget runs out count as unknown; a later retry decides them.
   */
  private async decKeys(refs: string[], budget: { calls: number }): Promise<string[]> {
    const answer = await this.call('POST', 'dec_keys', { key_IDs: refs.map((key_ID) => ({ key_ID })) }, refs.length);
    if (answer.status === 400 && /not found/i.test(messageOf(answer))) {
      this.markUp();
      if (refs.length === 1 || budget.calls < 2) return refs;
      budget.calls -= 2;
      const half = Math.ceil(refs.length / 2);
      return [...(await this.decKeys(refs.slice(0, half), budget)), ...(await this.decKeys(refs.slice(half), budget))];
    }
    if (answer.status !== 200) throw this.down(`the device answered ${answer.status} to dec_keys: ${messageOf(answer)}`);
    const keys = this.parseKeys(answer.body, 'dec_keys');
    const byId = new Map(keys.map((k) => [k.id.toLowerCase(), k.material]));
    if (keys.length !== refs.length || byId.size !== keys.length || refs.some((r) => !byId.has(r.toLowerCase()))) {
      keys.forEach((k) => k.material.fill(0));
      throw this.misbehaves('dec_keys', `${keys.length} keys that do not match the ${refs.length} key_IDs asked for`);
    }
    for (const ref of refs) this.held.set(ref, byId.get(ref.toLowerCase())!);
    this.markUp();
    return [];
  }

  /** enc_keys answered 503: "no key yet" if the device still answers its status call, else it is down. */
  private async noKeyOrDown(answer: Answer): Promise<DeviceKey[]> {
    this.limits = undefined;
    try {
      await this.readLimits();
    } catch (err) {
      if (!(err instanceof DeviceUnavailableError)) throw err;
      throw this.down(`the device answered 503 to enc_keys (${messageOf(answer)}) and its status call failed too`);
    }
    this.ctx.log.debug({ link: this.ctx.linkId, reason: messageOf(answer) }, 'QKD device has no key for this request yet');
    return [];
  }

  /** The device's limits, read from its status once and again after any failure. */
  private async readLimits(): Promise<Limits> {
    if (this.limits) return this.limits;
    const answer = await this.call('GET', 'status', undefined, 0);
    if (answer.status !== 200) throw this.down(`the device answered ${answer.status} to status: ${messageOf(answer)}`);
    const body = (answer.body ?? {}) as Record<string, unknown>;
    const positive = (v: unknown) => (Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : Infinity);
    const limits = { perRequest: positive(body.max_key_per_request), maxCount: positive(body.max_key_count) };
    if (limits.perRequest === Infinity && !this.warnedNoLimit) {
      this.warnedNoLimit = true;
      this.ctx.log.warn({ link: this.ctx.linkId }, 'QKD device status has no valid max_key_per_request: using keys_per_request alone');
    }
    this.markUp();
    this.limits = limits;
    return limits;
  }

  /** Decodes a key container; every key must be exactly one block. On any problem nothing decoded survives. */
  private parseKeys(body: unknown, what: string): Array<{ id: string; material: Buffer }> {
    const list = (body as { keys?: unknown; Keys?: unknown } | undefined)?.keys ?? (body as { Keys?: unknown })?.Keys;
    if (!Array.isArray(list)) throw this.misbehaves(what, 'an answer that is not a key container');
    const out: Array<{ id: string; material: Buffer }> = [];
    for (const item of list as Array<{ key_ID?: unknown; key?: unknown }>) {
      const id = item?.key_ID;
      const text = item?.key;
      const material = typeof text === 'string' && BASE64.test(text) ? Buffer.from(text, 'base64') : undefined;
      if (typeof id !== 'string' || id === '' || !material || material.length !== this.blockBytes) {
        material?.fill(0);
        out.forEach((k) => k.material.fill(0));
        const got = material ? `${material.length * 8} bits` : 'no valid base64 key';
        throw this.misbehaves(what, `a key of ${got} where ${this.ctx.blockBits} bits were asked for`);
      }
      out.push({ id, material });
    }
    return out;
  }

  /** One HTTPS call to the device; network failures and timeouts become DeviceUnavailableError. */
  private call(method: 'GET' | 'POST', op: string, body: unknown, keys: number): Promise<Answer> {
    const url = new URL(`api/v1/keys/${this.peer}/${op}`, this.base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    // A device answer bigger than the keys asked for could hold is refused unread.
    const limit = SMALL_ANSWER_BYTES + keys * (Math.ceil(this.blockBytes / 3) * 4 + ANSWER_BYTES_PER_KEY);
    return new Promise<Answer>((resolve, reject) => {
      let settled = false;
      let responded = false;
      let timer: NodeJS.Timeout | undefined;
      const chunks: Buffer[] = [];
      const fail = (why: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        chunks.forEach((c) => c.fill(0));
        reject(this.down(`the device at ${this.config.url} is unreachable (${op}: ${why})`));
      };
      const headers = { accept: 'application/json', ...(payload ? { 'content-type': 'application/json' } : {}) };
      const req = request(url, { method, agent: this.agent, headers }, (res) => {
        responded = true;
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          chunks.push(c);
          if (size > limit) req.destroy(new Error(`answer larger than ${limit} bytes`));
        });
        res.on('error', (err) => fail(describe(err)));
        res.on('close', () => fail('connection closed mid-answer')); // after 'end' this is a no-op
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const raw = Buffer.concat(chunks);
          chunks.forEach((c) => c.fill(0));
          let parsed: unknown;
          try {
            parsed = raw.length > 0 ? JSON.parse(raw.toString('utf8')) : undefined;
          } catch {
            parsed = undefined; // not JSON: every check downstream treats it as a misbehaving answer
          } finally {
            raw.fill(0);
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.config.timeout_ms} ms`)), this.config.timeout_ms);
      req.on('error', (err) => fail(describe(err)));
      req.on('close', () => responded || fail('connection closed'));
      req.end(payload);
    });
  }

  private misbehaves(what: string, detail: string): DeviceUnavailableError {
    const fields = { link: this.ctx.linkId, device: this.config.url, op: what, problem: detail };
    this.ctx.log.error(fields, 'QKD device misbehaves: answer dropped');
    return this.down(`the QKD device misbehaves: ${what} returned ${detail}; the answer was dropped`);
  }

  private down(why: string): DeviceUnavailableError {
    this.limits = undefined;
    if (this.up) {
      this.lastOutage = { at: new Date().toISOString() };
      this.outages++;
      this.ctx.log.warn({ link: this.ctx.linkId, device: this.config.url, reason: why }, 'QKD device unavailable');
    }
    this.up = false;
    return new DeviceUnavailableError(`link ${this.ctx.linkId}: ${why}`);
  }

  private markUp(): void {
    if (this.up) return;
    this.up = true;
    if (this.lastOutage) this.lastOutage = { ...this.lastOutage, durationMs: Date.now() - Date.parse(this.lastOutage.at) };
    this.ctx.log.info({ link: this.ctx.linkId, device: this.config.url }, 'QKD device available again');
  }

  private checkOpen(): void {
    if (this.closed) throw new DeviceUnavailableError(`link ${this.ctx.linkId}: the ETSI 014 source is closed`);
  }
}

/** Standard base64 (RFC 4648 §4), padded or not: what ETSI 014 devices send. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/** The device's own error message, shortened and stripped of control characters (it goes into logs). */
function messageOf(answer: Answer): string {
  const message = (answer.body as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' ? message.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 200) : 'no ETSI Error message';
}

function describe(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code ? `${code}${err.message && !err.message.includes(code) ? `: ${err.message}` : ''}` : err.message;
}
