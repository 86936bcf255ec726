import { Counter, Gauge, type Registry } from 'prom-client';
import type { FallbackState } from '../keys/fallback-state.js';
import type { LinkFigures } from '../pool/link-figures.js';

export interface LinkMetricsSources {
  /** Ingest figures and what each link's device reports, by link ID (src/pool/link-figures.ts). */
  figures: ReadonlyMap<string, LinkFigures>;
  /** Which links fall back to post-quantum keys now, and the fallback keys this process delivered per pair. */
  fallback: Pick<FallbackState, 'isActive' | 'deliveredByPair'>;
}

/**
 * Per-link figures, read from memory when Prometheus scrapes (nothing is counted on the ingest path for them):
 * how much material each link brought in, whether its device is up, its QBER, its outages, and the fallback.
 * Counters are set from the running totals those modules keep since the process started (a restart starts them at
 * zero again, which `rate()` handles).
 */
export function registerLinkMetrics(registry: Registry, from: LinkMetricsSources): void {
  const registers = [registry];
  const links = () => [...from.figures.entries()].map(([linkId, f]) => ({ linkId, ...f.totals() }));
  new Counter({
    name: 'qkms_link_ingested_bits_total',
    help: 'Bits of secure key this end of the link stored in its pool since the process started; rate() is the key rate.',
    labelNames: ['link_id'],
    registers,
    collect() {
      this.reset();
      for (const l of links()) this.labels(l.linkId).inc(l.bits);
    },
  });
  new Counter({
    name: 'qkms_link_ingested_keys_total',
    help: 'Keys (blocks of the link block size, keys.key_size bits) this end of the link stored since the process started.',
    labelNames: ['link_id'],
    registers,
    collect() {
      this.reset();
      for (const l of links()) this.labels(l.linkId).inc(l.blocks);
    },
  });
  new Gauge({
    name: 'qkms_link_up',
    help: 'Whether the QKD device (or simulator) of the link answered its last call: 1 up, 0 down.',
    labelNames: ['link_id'],
    registers,
    collect() {
      this.reset();
      for (const l of links()) this.labels(l.linkId).set(l.device.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'qkms_link_qber_ratio',
    help: 'Quantum bit error rate last reported by the link device (0..1); absent for devices that do not report one.',
    labelNames: ['link_id'],
    registers,
    collect() {
      this.reset();
      for (const l of links()) if (l.device.qber !== undefined) this.labels(l.linkId).set(l.device.qber);
    },
  });
  new Counter({
    name: 'qkms_link_outages_total',
    help: 'Times the link device went down (stopped answering or reported an outage) since the process started.',
    labelNames: ['link_id'],
    registers,
    collect() {
      this.reset();
      for (const l of links()) this.labels(l.linkId).inc(l.device.outages);
    },
  });
  new Gauge({
    name: 'qkms_link_in_fallback',
    help: 'Whether pairs of the link get post-quantum fallback keys instead of QKD keys now (1), or QKD keys (0).',
    labelNames: ['link_id'],
    registers,
    collect() {
      this.reset();
      for (const linkId of from.figures.keys()) this.labels(linkId).set(from.fallback.isActive(linkId) ? 1 : 0);
    },
  });
  new Counter({
    name: 'qkms_fallback_keys_delivered_total',
    help: 'Post-quantum fallback keys (not QKD) this KME made and handed to master SAEs, per pair, since the process started.',
    labelNames: ['master_sae', 'slave_sae'],
    registers,
    collect() {
      this.reset();
      for (const p of from.fallback.deliveredByPair()) this.labels(p.master, p.slave).inc(p.keys);
    },
  });
}
