import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { SimulatorSourceConfig } from '../config/schema.js';
import { ConfigError } from '../config/load.js';
import {
  DeviceUnavailableError,
  type DeviceFigures,
  type DeviceKey,
  type DeviceRef,
  type LinkOutageDrill,
  type LinkSource,
  type SourceContext,
} from './link-source.js';

/** Above this QBER, BB84-family protocols cannot distil a secret key: a real device then yields nothing. */
export const QBER_ABORT = 0.11;

export interface SimulatorOptions {
  linkId: string;
  blockBits: number;
  rateBitsPerSecond: number;
  qber: number;
  /** Shared by both ends of a paired link: both derive the same material for the same position. */
  seed?: Buffer;
  /** Stream position of the first block this device produces (continues after what the pool already holds). */
  startSeq: string;
  /** Scheduled outages, relative to `now()` at construction. */
  outages?: ReadonlyArray<{ afterMs: number; durationMs: number }>;
  /** Blocks the device buffers while nobody reads; past that it pauses (about two seconds of key by default). */
  bufferBlocks?: number;
  now?: () => number;
}

/**
 * A simulated QKD device pair at a configured secure key rate. Its refs are stream positions: the device never
 * skips one (when its buffer is full it pauses instead of dropping), so a restarted primary continues at the
 * pool's next position and can never produce the same material at two positions.
 *
 * Without a seed the material is OS randomness and only a loopback link can use it (`fetch` has nothing to
 * derive from). With a seed, material(position) = AES-256-CTR under a key derived from the seed and the link ID,
 * at the position's byte offset: both ends get identical material without talking. Not a quantum source, and it
 * says so.
 */
export class SimulatedDevice implements LinkSource, LinkOutageDrill {
  readonly description: string;
  private readonly blockBytes: number;
  private readonly streamKey: Buffer | undefined;
  private readonly bufferBlocks: number;
  private readonly now: () => number;
  private readonly started: number;
  private produced: bigint; // next position the device will produce
  private taken: bigint; // next position not yet taken
  private credit = 0; // bits produced but not yet a whole block
  private last: number;
  private closed = false;
  /** Outage intervals in absolute ms (scheduled ones, and those `outage()` added). */
  private readonly downtimes: Array<{ from: number; to: number }>;
  private lastOutage: DeviceFigures['lastOutage'];
  private outages = 0;
  private wasDown = false;

  constructor(private readonly opts: SimulatorOptions) {
    this.blockBytes = opts.blockBits / 8;
    this.streamKey = opts.seed ? createHmac('sha256', opts.seed).update(`qkd-kms/simulator/v1\0${opts.linkId}`).digest() : undefined;
    this.now = opts.now ?? Date.now;
    this.started = this.now();
    this.last = this.started;
    this.downtimes = (opts.outages ?? []).map((o) => ({ from: this.started + o.afterMs, to: this.started + o.afterMs + o.durationMs }));
    this.produced = BigInt(opts.startSeq);
    this.taken = this.produced;
    this.bufferBlocks = opts.bufferBlocks ?? Math.max(1, Math.ceil((2 * opts.rateBitsPerSecond) / opts.blockBits));
    const rate = formatRate(opts.rateBitsPerSecond);
    this.description = opts.seed
      ? `simulated QKD device pair on link ${opts.linkId} (${rate}, QBER ${opts.qber}, seeded stream — not a quantum source)`
      : `simulated QKD link ${opts.linkId} (loopback, ${rate}, OS randomness — not a quantum source)`;
  }

  catchUp(nextSeq: string): void {
    const next = BigInt(nextSeq);
    if (next > this.produced) this.produced = next;
    if (next > this.taken) this.taken = next;
  }

  /** Takes the link down now for `ms` (tests and the demo's fault drills). */
  outage(ms: number): void {
    const t = this.now();
    this.downtimes.push({ from: t, to: t + ms });
  }

  /** Brings the link back now: an outage in progress ends (tests that must not depend on how long their steps take). */
  endOutage(): void {
    const t = this.now();
    for (const d of this.downtimes) if (d.from <= t && d.to > t) d.to = t;
  }

  async take(maxBlocks: number): Promise<DeviceKey[]> {
    this.checkUp();
    this.produce();
    const n = Number(bigMin(BigInt(maxBlocks), this.produced - this.taken));
    if (n <= 0) return [];
    const first = this.taken;
    this.taken += BigInt(n);
    const material = this.streamKey ? this.derive(first, n) : randomBytes(n * this.blockBytes);
    return [{ ref: String(first), blocks: n, material }];
  }

  async fetch(refs: ReadonlyArray<DeviceRef>): Promise<Buffer[]> {
    if (!this.streamKey) throw new Error(`link ${this.opts.linkId}: a loopback simulator has no peer to fetch for`);
    this.checkUp();
    return refs.map((r) => {
      if (!/^\d+$/.test(r.ref)) throw new Error(`simulator ref ${JSON.stringify(r.ref)} is not a stream position`);
      return this.derive(BigInt(r.ref), r.blocks);
    });
  }

  async release(): Promise<void> {
    // Nothing kept: taken material was handed over, derived material is recomputed on demand.
  }

  figures(): DeviceFigures {
    const up = !this.observeOutage();
    return { qber: this.opts.qber, up, outages: this.outages, ...(this.lastOutage ? { lastOutage: this.lastOutage } : {}) };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.streamKey?.fill(0);
  }

  /**
   * Whether the device is down now, noting the start and end of an outage. Called by take/fetch and by figures():
   * a full pool asks its device for nothing, and an outage then is still seen (and counted) when figures are read.
   */
  private observeOutage(): boolean {
    const down = this.isDown();
    if (down && !this.wasDown) {
      this.lastOutage = { at: new Date(this.now()).toISOString() };
      this.outages++;
    }
    if (!down && this.wasDown && this.lastOutage) {
      this.lastOutage = { ...this.lastOutage, durationMs: this.now() - Date.parse(this.lastOutage.at) };
    }
    this.wasDown = down;
    return down;
  }

  private checkUp(): void {
    if (this.closed) throw new DeviceUnavailableError(`simulated device on link ${this.opts.linkId} is closed`);
    if (this.observeOutage()) throw new DeviceUnavailableError(`simulated link ${this.opts.linkId} is down (outage)`);
  }

  private isDown(): boolean {
    const t = this.now();
    return this.downtimes.some((d) => t >= d.from && t < d.to);
  }

  /** Milliseconds of outage within [from, to): no key distils then. */
  private downWithin(from: number, to: number): number {
    // Overlapping outages count once: walk them in order, merging.
    const sorted = this.downtimes.filter((d) => d.to > from && d.from < to).sort((a, b) => a.from - b.from);
    let total = 0;
    let end = from;
    for (const d of sorted) {
      const start = Math.max(d.from, end);
      const stop = Math.min(d.to, to);
      if (stop > start) total += stop - start;
      end = Math.max(end, stop);
    }
    return total;
  }

  private produce(): void {
    const t = this.now();
    if (this.opts.qber > QBER_ABORT) {
      this.last = t;
      return; // error rate too high: privacy amplification leaves nothing
    }
    this.credit += ((t - this.last - this.downWithin(this.last, t)) / 1000) * this.opts.rateBitsPerSecond;
    this.last = t;
    const room = BigInt(this.bufferBlocks) - (this.produced - this.taken);
    const blocks = bigMin(BigInt(Math.floor(this.credit / this.opts.blockBits)), room > 0n ? room : 0n);
    // A full buffer pauses the device (credit is dropped, no position is skipped).
    this.credit = room > 0n ? this.credit - Number(blocks) * this.opts.blockBits : 0;
    this.produced += blocks;
  }

  /** AES-256-CTR keystream at byte offset position × blockBytes. */
  private derive(first: bigint, blocks: number): Buffer {
    const offset = first * BigInt(this.blockBytes);
    const iv = Buffer.alloc(16);
    let counter = offset / 16n;
    for (let i = 15; i >= 0; i--) {
      iv[i] = Number(counter & 0xffn);
      counter >>= 8n;
    }
    const skip = Number(offset % 16n);
    const cipher = createCipheriv('aes-256-ctr', this.streamKey!, iv);
    const out = cipher.update(Buffer.alloc(skip + blocks * this.blockBytes));
    return Buffer.from(out.subarray(skip));
  }
}

export async function createSimulatorSource(config: SimulatorSourceConfig, ctx: SourceContext): Promise<SimulatedDevice> {
  const seed = readSeed(config, ctx);
  if (ctx.role !== 'loopback' && !seed) {
    throw new ConfigError(
      `/links/${ctx.linkId}/source: a simulator on a link between two KMEs needs the same seed at both ends (seed_file or seed_env)`,
    );
  }
  if (seed) ctx.log.warn({ link: ctx.linkId }, 'simulated QKD link with a shared seed: whoever holds the seed holds every key (demo and tests only)');
  return new SimulatedDevice({
    linkId: ctx.linkId,
    blockBits: ctx.blockBits,
    rateBitsPerSecond: config.rate_bits_per_second,
    qber: config.qber,
    seed,
    startSeq: await ctx.startSeq(),
    outages: config.outages.map((o) => ({ afterMs: o.after_seconds * 1000, durationMs: o.duration_seconds * 1000 })),
  });
}

function readSeed(config: SimulatorSourceConfig, ctx: SourceContext): Buffer | undefined {
  const where = config.seed_file ? `file ${config.seed_file}` : config.seed_env ? `environment variable ${config.seed_env}` : undefined;
  if (!where) return undefined;
  let text: string | undefined;
  try {
    text = config.seed_file ? readFileSync(config.seed_file, 'utf8') : process.env[config.seed_env!];
  } catch (err) {
    throw new ConfigError(`/links/${ctx.linkId}/source: cannot read the seed from ${where}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const hex = (text ?? '').trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new ConfigError(`/links/${ctx.linkId}/source: the seed in ${where} must be 32 bytes as 64 hex digits`);
  }
  return Buffer.from(hex, 'hex');
}

const bigMin = (a: bigint, b: bigint) => (a < b ? a : b);

function formatRate(bps: number): string {
  return bps >= 1e6 ? `${bps / 1e6} Mbit/s` : bps >= 1e3 ? `${bps / 1e3} kbit/s` : `${bps} bit/s`;
}
