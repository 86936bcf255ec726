// Phase k: sustained ingest with concurrent delivery. The same open-loop enc_keys load as phase e (FIXED_RATE req/s
// of one 256-bit key, latency from each request's scheduled time), twice on the single KME's pool:
//   k0 — the KME restarted with the measuring link (BENCH_LINK_BPS): no ingest beyond what that link brings;
//   k  — the KME restarted with a link far faster than the target (BENCH_INGEST_BPS, 400 Mbit/s), its own default
//        ingest batch (BENCH_INGEST_BATCH) and a pool cap far above what it holds, so it ingests as fast as it can
//        for the whole measurement.
// Both are fresh processes after the same warm-up, so the p99 ratio k/k0 compares like with like. (Phase e ran on
// a process already warm from phases a–d; it stays the figure for the latency target.)
//
// The ingest rate comes from two stable interfaces, read at the start and end of k's measured window:
// - the ETSI status: keys ingested = rise of stored_key_count + keys delivered meanwhile (every 2xx of the load);
// - status_extension.qkms_link.ingested_blocks (blocks stored since the KME started), also sampled every second
//   to show whether the rate holds.
import type { tlsFor } from './client.js';
import type { KmeHost } from './kme-host.js';
import { pacedAfterWarmUp, type PhaseResult } from './load.js';
import type { Phase } from './report.js';
import { ENC1, FIXED_RATE, INGEST_BATCH, INGEST_BPS, INGEST_TARGET_BPS, LINK_BPS, MAX_KEY_COUNT, SECONDS, WARMUP } from './settings.js';

const KEY_BITS = 256;

export interface IngestResult {
  link_bits_per_second: number;
  /** The link's max_blocks_per_batch ('KME default' when the bench left it out). */
  max_blocks_per_batch: number | 'KME default';
  /** The cap the ingesting KME ran with (far above what it could ingest in the phase). */
  max_key_count: number;
  window_seconds: number;
  keys_ingested: number;
  keys_delivered: number;
  /** From the ETSI status: 256-bit keys per second, and the same in Mbit/s. */
  keys_per_second: number;
  megabits_per_second: number;
  /** From status_extension.qkms_link, when the KME reports it. */
  link_blocks_per_second?: number;
  link_megabits_per_second?: number;
  /** Blocks per second in each whole second of the window (qkms_link), to see whether the rate holds. */
  per_second?: number[];
  target_megabits_per_second: number;
  p50_ms_without_ingest?: number;
  p99_ms_without_ingest?: number;
  p50_ms_with_ingest: number;
  p99_ms_with_ingest: number;
  /** p99 with ingest over p99 without (goal ≤ 1.2). */
  p99_ratio?: number;
  notes: string[];
}

const title = (what: string) => `GET enc_keys?number=1 at a fixed ${FIXED_RATE} req/s, ${what}`;
const RPS_METHOD = 'median of one-second samples (open-loop pacer, ≤32 keep-alive connections; latency from scheduled send time)';

/** One warm-up and one measured run of the paced load, as in phase e. */
function pacedRun(url: string, tls: ReturnType<typeof tlsFor>, during?: () => Promise<void>): Promise<PhaseResult> {
  return pacedAfterWarmUp({ url, tls, path: ENC1, rate: FIXED_RATE, warmupS: WARMUP, durationS: SECONDS, during });
}

export async function ingestPhase(host: KmeHost, tlsA: ReturnType<typeof tlsFor>, done: (p: Phase) => void): Promise<IngestResult> {
  const notes: string[] = [];

  // ── k0: no ingest (the measuring link), a fresh process like k's.
  await host.start({ rateBps: LINK_BPS, maxKeyCount: MAX_KEY_COUNT }, 'k0');
  const before = await host.stored();
  const k0: Phase = { id: 'k0', title: title(`without ingest (${LINK_BPS / 1e6} Mbit/s link), fresh process`), keysPerRequest: 1, rpsMethod: RPS_METHOD, notes: [] };
  console.log(`\n[k0] pool ${before.toLocaleString('en-US')} keys; the paced load needs about ${(FIXED_RATE * (WARMUP + SECONDS)).toLocaleString('en-US')}`);
  if (before < FIXED_RATE * (WARMUP + SECONDS)) k0.notes.push(`pool ${before} keys is below what this run needs; expect 503s`);
  k0.kme = await pacedRun(host.url, tlsA);
  done(k0);

  // ── k: the same load while the KME ingests from a link far faster than the target.
  const stored = await host.stored();
  // Room for the whole phase even at the link's full rate (the cap is only a number: nothing is allocated by it).
  const cap = stored + Math.ceil((INGEST_BPS / KEY_BITS) * (WARMUP + SECONDS + 60));
  await host.start({ rateBps: INGEST_BPS, maxKeyCount: cap, maxBlocksPerBatch: INGEST_BATCH }, 'k');
  console.log(`\n[k] KME restarted with a ${INGEST_BPS / 1e6} Mbit/s link, max_blocks_per_batch ${INGEST_BATCH ?? "the KME's default"} and max_key_count ${cap.toLocaleString('en-US')} (pool ${stored.toLocaleString('en-US')} keys)`);

  let start: { at: number; stored: number; blocks?: number } | undefined;
  const samples: Array<{ at: number; blocks: number }> = [];
  let poller: NodeJS.Timeout | undefined;
  const k: Phase = { id: 'k', title: title(`while the KME ingests from a ${INGEST_BPS / 1e6} Mbit/s link`), keysPerRequest: 1, rpsMethod: RPS_METHOD, notes: [] };
  const result = await pacedRun(host.url, tlsA, async () => {
    // After the warm-up (ingest has been running since the start): the window opens here.
    const r = await host.poolReading();
    start = { at: performance.now(), stored: r.stored, blocks: r.ingestedBlocks };
    if (r.ingestedBlocks !== undefined) {
      samples.push({ at: start.at, blocks: r.ingestedBlocks });
      poller = setInterval(() => {
        void host.poolReading().then(
          (s) => s.ingestedBlocks !== undefined && samples.push({ at: performance.now(), blocks: s.ingestedBlocks }),
          () => undefined, // a missed sample only widens the next interval
        );
      }, 1000);
    }
  });
  clearInterval(poller);
  const end = await host.poolReading();
  const endAt = performance.now();
  await host.stop();
  k.kme = result;

  const seconds = (endAt - start!.at) / 1000;
  const delivered = result.statusCodes['200'] ?? 0;
  const ingested = end.stored - start!.stored + delivered;
  const keysPerSecond = ingested / seconds;
  const linkBlocks = end.ingestedBlocks !== undefined && start!.blocks !== undefined ? end.ingestedBlocks - start!.blocks : undefined;
  if (end.stored >= cap) notes.push('the pool reached its cap during the measurement: ingest was held back by it, not by the KME');
  if (linkBlocks === undefined) notes.push('the KME reported no status_extension.qkms_link: rate from the ETSI status only');
  if (result.rpsMean < FIXED_RATE * 0.95) notes.push(`the KME answered ${Math.round(result.rpsMean)} req/s of the ${FIXED_RATE} offered: latency is queueing`);
  // A poll still in flight at the end may land after it: only samples inside the window count.
  const inWindow = samples.filter((s) => s.at <= endAt);
  const perSecond = inWindow.slice(1).map((s, i) => Math.round(((s.blocks - inWindow[i]!.blocks) * 1000) / (s.at - inWindow[i]!.at)));
  k.notes.push(...notes);
  done(k);

  const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
  const out: IngestResult = {
    link_bits_per_second: INGEST_BPS,
    max_blocks_per_batch: INGEST_BATCH ?? 'KME default',
    max_key_count: cap,
    window_seconds: round(seconds, 2),
    keys_ingested: Math.round(ingested),
    keys_delivered: delivered,
    keys_per_second: Math.round(keysPerSecond),
    megabits_per_second: round((keysPerSecond * KEY_BITS) / 1e6, 2),
    ...(linkBlocks !== undefined
      ? { link_blocks_per_second: Math.round(linkBlocks / seconds), link_megabits_per_second: round((linkBlocks * KEY_BITS) / seconds / 1e6, 2) }
      : {}),
    ...(perSecond.length ? { per_second: perSecond } : {}),
    target_megabits_per_second: INGEST_TARGET_BPS / 1e6,
    ...(k0.kme ? { p50_ms_without_ingest: round(k0.kme.p50Ms), p99_ms_without_ingest: round(k0.kme.p99Ms) } : {}),
    p50_ms_with_ingest: round(result.p50Ms),
    p99_ms_with_ingest: round(result.p99Ms),
    ...(k0.kme && k0.kme.p99Ms > 0 ? { p99_ratio: round(result.p99Ms / k0.kme.p99Ms, 2) } : {}),
    notes,
  };
  printIngest(out);
  return out;
}

export function printIngest(r: IngestResult): void {
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  console.log(`   ingest during k: ${n(r.keys_per_second)} keys/s = ${r.megabits_per_second} Mbit/s (ETSI status: ${n(r.keys_ingested)} keys in ${r.window_seconds} s, ` +
    `${n(r.keys_delivered)} delivered meanwhile)` +
    (r.link_blocks_per_second !== undefined ? `; link figures ${n(r.link_blocks_per_second)} blocks/s = ${r.link_megabits_per_second} Mbit/s` : '') +
    `; goal ≥ ${r.target_megabits_per_second} Mbit/s`);
  if (r.per_second?.length) {
    const s = [...r.per_second].sort((a, b) => a - b);
    console.log(`   blocks/s each second: min ${n(s[0]!)}, median ${n(s[Math.floor(s.length / 2)]!)}, max ${n(s[s.length - 1]!)}`);
  }
  if (r.p99_ratio !== undefined) {
    console.log(`   p99 with ingest ${r.p99_ms_with_ingest} ms over without ${r.p99_ms_without_ingest} ms: ${r.p99_ratio}× (goal ≤ 1.2×); p50 ${r.p50_ms_with_ingest} vs ${r.p50_ms_without_ingest} ms`);
  }
}
