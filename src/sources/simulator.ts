import { randomBytes } from 'node:crypto';
import type { KeySource, SourceBlock } from './key-source.js';

export interface SimulatorOptions {
  linkId: string;
  kmeId: string;
  blockBits: number;
  /** Secure key rate of the simulated link. */
  rateBitsPerSecond: number;
  /** First stream position to produce (continues after what the pool already holds). */
  startSeq: string;
  /** Blocks a real device would buffer while the KME is not reading; older material is dropped past that. */
  bufferBlocks?: number;
  now?: () => number;
}

/**
 * A simulated QKD link inside the process: random material at a configured secure-key rate. Both "ends" are this
 * KME (a loopback link), which is enough while all SAEs are attached to one KME. Its material is as good as the
 * OS random generator, and it says in its description that it is not a quantum source.
 */
export class SimulatedLink implements KeySource {
  readonly description: string;
  readonly linkId: string;
  readonly peerKmeId: string;
  private readonly blockBytes: number;
  private readonly buffer: SourceBlock[] = [];
  private readonly bufferBlocks: number;
  private nextSeq: bigint;
  private credit = 0; // bits produced but not yet cut into a block
  private last: number;
  private closed = false;
  private readonly now: () => number;

  constructor(private readonly opts: SimulatorOptions) {
    this.linkId = opts.linkId;
    this.peerKmeId = opts.kmeId;
    this.blockBytes = opts.blockBits / 8;
    this.nextSeq = BigInt(opts.startSeq);
    this.now = opts.now ?? Date.now;
    this.last = this.now();
    // By default a device buffers about two seconds of key, at least one block.
    this.bufferBlocks = opts.bufferBlocks ?? Math.max(1, Math.ceil((2 * opts.rateBitsPerSecond) / opts.blockBits));
    this.description = `simulated QKD link ${opts.linkId} (loopback, ${formatRate(opts.rateBitsPerSecond)}, OS randomness — not a quantum source)`;
  }

  pending(max: number): SourceBlock[] {
    if (this.closed) return [];
    this.produce();
    return this.buffer.slice(0, max);
  }

  acknowledge(count: number): void {
    for (const block of this.buffer.splice(0, count)) block.material.fill(0);
  }

  close(): void {
    this.closed = true;
    this.acknowledge(this.buffer.length);
  }

  private produce(): void {
    const t = this.now();
    this.credit += ((t - this.last) / 1000) * this.opts.rateBitsPerSecond;
    this.last = t;
    const room = this.bufferBlocks - this.buffer.length;
    const blocks = Math.min(Math.floor(this.credit / this.opts.blockBits), Math.max(room, 0));
    // Material the device could not buffer is lost, as on a real link whose KME stopped reading.
    this.credit = room > 0 ? this.credit - blocks * this.opts.blockBits : 0;
    if (blocks <= 0) return;
    const material = randomBytes(blocks * this.blockBytes);
    for (let i = 0; i < blocks; i++) {
      this.buffer.push({
        seq: String(this.nextSeq++),
        material: Buffer.from(material.subarray(i * this.blockBytes, (i + 1) * this.blockBytes)),
      });
    }
    material.fill(0);
  }
}

function formatRate(bps: number): string {
  return bps >= 1e6 ? `${bps / 1e6} Mbit/s` : bps >= 1e3 ? `${bps / 1e3} kbit/s` : `${bps} bit/s`;
}
