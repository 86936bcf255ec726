import type { DeviceFigures, LinkSource } from '../sources/link-source.js';

/** What an operator (and the metrics to come) want to know about a link, now. */
export interface LinkFiguresSnapshot {
  link_id: string;
  /** Secure key stored at this end over the last minute, in bits per second. */
  ingest_bits_per_second: number;
  /** Blocks stored at this end since the KME started. */
  ingested_blocks: number;
  device_up: boolean;
  qber?: number;
  last_outage?: { at: string; duration_ms?: number };
}

const WINDOW_MS = 60_000;

/**
 * Per-link ingest figures: how much material this end stored, and how fast over the last minute, with what its
 * device reports (up, QBER, last outage). Fed by whichever side stores material (the ingester at a primary or
 * loopback end, the announcement handler at a secondary). Cheap: a few numbers per second of samples.
 */
export class LinkFigures {
  private readonly samples: Array<{ at: number; blocks: number }> = [];
  private total = 0;

  constructor(
    private readonly linkId: string,
    private readonly blockBits: number,
    private readonly device: LinkSource,
    private readonly now: () => number = Date.now,
  ) {}

  /** `blocks` were stored at this end just now. */
  record(blocks: number): void {
    if (blocks <= 0) return;
    this.total += blocks;
    const t = this.now();
    const last = this.samples[this.samples.length - 1];
    if (last && t - last.at < 1_000) last.blocks += blocks;
    else this.samples.push({ at: t, blocks });
    this.prune(t);
  }

  snapshot(): LinkFiguresSnapshot {
    const t = this.now();
    this.prune(t);
    const inWindow = this.samples.reduce((n, s) => n + s.blocks, 0);
    const device: DeviceFigures = this.device.figures();
    return {
      link_id: this.linkId,
      ingest_bits_per_second: Math.round((inWindow * this.blockBits) / (WINDOW_MS / 1000)),
      ingested_blocks: this.total,
      device_up: device.up,
      ...(device.qber !== undefined ? { qber: device.qber } : {}),
      ...(device.lastOutage
        ? { last_outage: { at: device.lastOutage.at, ...(device.lastOutage.durationMs !== undefined ? { duration_ms: device.lastOutage.durationMs } : {}) } }
        : {}),
    };
  }

  /** For metrics: the running totals since the process started, and what the device reports now. */
  totals(): { blocks: number; bits: number; device: DeviceFigures } {
    return { blocks: this.total, bits: this.total * this.blockBits, device: this.device.figures() };
  }

  private prune(t: number): void {
    while (this.samples.length > 0 && t - this.samples[0]!.at > WINDOW_MS) this.samples.shift();
  }
}
