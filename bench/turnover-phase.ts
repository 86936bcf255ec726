// Phase l: does a pool that has turned over millions of keys serve as fast as a fresh one? Two databases of its own,
// each a pool capped at BENCH_TURNOVER_POOL keys and filled with the fast link: T, which will turn over, and F,
// which stays fresh (never delivered from). Then, each on a KME restarted with the measuring link, phase b's load
// (1 key, keep-alive; KME and reference):
//   l0  on T while it is still fresh;
//   T turns over: restarted with the ingest link (BENCH_INGEST_BPS), BENCH_TURNOVER keys delivered with 128-key
//       requests at full speed while ingest refills, then refilled to its cap;
//   l   on T, turned over;
//   l0b on F, fresh.
// The fresh figure is the mean of l0 and l0b, taken before and after l: a machine that drifts during the minutes
// of turnover moves both sides of the ratio alike. All three run on a fresh process, on a full pool of the same
// size, with the same link: only the history differs. The reference runs beside each, so the ratio can also be
// read net of the machine's noise.
//
// Run time: 3 × 2 × (WARMUP + SECONDS) s of measurement, six KME starts (a few seconds each), two fills of
// BENCH_TURNOVER_POOL keys at the KME's ingest rate, and the turnover itself, bounded by how fast the KME delivers
// while it ingests on the same cores: BENCH_TURNOVER / that rate, at most BENCH_TURNOVER_SECONDS. (With 2 cores at
// ~7,000 keys/s, the default 2,000,000 keys take ~5 min; the phase ~6–7 min.)
import type { SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import type { DemoPki } from '../src/pki/dev-pki.js';
import type { tlsFor } from './client.js';
import { deliverKeys, type DeliverResult } from './deliver-loop.js';
import { deliveryGrowth, growthPoint, type DeliveryGrowth } from './growth.js';
import { KmeHost } from './kme-host.js';
import { fillPool, twoServers } from './measure.js';
import type { Phase } from './report.js';
import {
  AUTOCANNON_RPS,
  CPU_PROF,
  ENC1,
  FILL_BPS,
  FILL_SECONDS,
  INGEST_BATCH,
  INGEST_BPS,
  LINK_BPS,
  TURNOVER,
  TURNOVER_POOL,
  TURNOVER_SECONDS,
} from './settings.js';

export interface TurnoverResult {
  pool_cap: number;
  keys_target: number;
  turnover: DeliverResult;
  /** Pool at the start of each measurement. */
  pools: Record<'l0' | 'l' | 'l0b', number>;
  /** KME req/s after the turnover over the mean of the two fresh runs (goal ≥ 0.9). */
  ratio?: number;
  /** The same with each run first divided by its own reference run (the machine's noise cancels). */
  ratio_per_reference?: number;
  seconds: number;
  notes: string[];
}

export interface TurnoverContext {
  root: string;
  pki: DemoPki;
  token: SoftHsmToken;
  referenceUrl: string;
  tlsA: ReturnType<typeof tlsFor>;
  /** Growth per key of an ingest-only stretch (the fill), to take the refill's share out of the turnover's growth. */
  ingestBytesPerKey?: number;
}

const n = (x: number) => x.toLocaleString('en-US');

export async function turnoverPhase(
  ctx: TurnoverContext,
  done: (p: Phase) => void,
): Promise<{ result: TurnoverResult; hosts: KmeHost[]; growth?: DeliveryGrowth }> {
  const began = Date.now();
  const notes: string[] = [];
  const T = await KmeHost.create(ctx.root, ctx.pki, ctx.token, { profile: CPU_PROF });
  const F = await KmeHost.create(ctx.root, ctx.pki, ctx.token, { profile: CPU_PROF });
  console.log(`\nphase l: databases ${T.databaseName} (turns over) and ${F.databaseName} (stays fresh), pool cap ${n(TURNOVER_POOL)} keys, ` +
    `turnover of ${n(TURNOVER)} keys (at most ${TURNOVER_SECONDS} s)`);
  const link = (rateBps: number) => ({ rateBps, maxKeyCount: TURNOVER_POOL });

  for (const [host, label] of [[T, 'l fill'], [F, 'l fill (fresh copy)']] as const) {
    await host.start(link(FILL_BPS), label);
    await fillPool(host.stored, TURNOVER_POOL, FILL_SECONDS, `phase l's pool ${host.databaseName}`);
    await host.stop();
  }

  const measure = async (host: KmeHost, id: 'l0' | 'l' | 'l0b', what: string): Promise<{ phase: Phase; pool: number }> => {
    await host.start(link(LINK_BPS), id);
    const pool = await host.stored();
    const phase: Phase = { id, title: `GET enc_keys?number=1 (256 bits), ${what}`, keysPerRequest: 1, rpsMethod: AUTOCANNON_RPS, notes: [] };
    console.log(`\n[${id}] pool ${n(pool)} keys`);
    await twoServers(phase, (s) => ({ url: s === 'kme' ? host.url : ctx.referenceUrl, tls: ctx.tlsA, path: ENC1 }), pool);
    await host.stop();
    return { phase, pool };
  };

  const fresh = await measure(T, 'l0', 'fresh pool (only ever filled), before the turnover');
  done(fresh.phase);

  await T.start({ ...link(INGEST_BPS), maxBlocksPerBatch: INGEST_BATCH }, 'l turnover');
  const before = await growthPoint(T.databaseUrl, T.poolReading);
  console.log(`[l] turning the pool over: ${n(TURNOVER)} keys, 128 per request, ingest at ${INGEST_BPS / 1e6} Mbit/s refilling…`);
  let last = { delivered: 0, seconds: 0 };
  const turnover = await deliverKeys(T.url, T.A, {
    keys: TURNOVER,
    maxSeconds: TURNOVER_SECONDS,
    progress: async (delivered, seconds) => {
      const rate = Math.round((delivered - last.delivered) / (seconds - last.seconds));
      last = { delivered, seconds };
      const pool = await T.stored().catch(() => NaN);
      console.log(`  ${n(delivered)} keys delivered in ${seconds.toFixed(0)} s (+${n(rate)}/s); pool ${n(pool)}`);
    },
  });
  console.log(`  turnover: ${n(turnover.keys_delivered)} keys in ${turnover.seconds} s (${n(turnover.keys_per_second)} keys/s)` +
    (Object.keys(turnover.refused).length ? `; refused ${JSON.stringify(turnover.refused)} (503: pool empty, ingest behind)` : '') +
    (turnover.errors ? `; ${turnover.errors} network errors` : ''));
  if (turnover.stopped_early) notes.push(`turnover stopped early (${turnover.stopped_early}) at ${n(turnover.keys_delivered)} keys`);
  // Refilled to the cap, so that l measures a pool of the same size as the fresh runs.
  const refill = await fillPool(T.stored, Math.floor(TURNOVER_POOL * 0.98), 120, "phase l's pool (refill)");
  if (refill.stored < TURNOVER_POOL * 0.98) notes.push(`pool refilled only to ${n(refill.stored)} keys before l`);
  const after = await growthPoint(T.databaseUrl, T.poolReading);
  await T.stop();
  const growth = deliveryGrowth(`phase l turnover, ${n(turnover.keys_delivered)} keys`, before, after, {
    delivered: turnover.keys_delivered,
    ingestBytesPerKey: ctx.ingestBytesPerKey,
  });

  const turned = await measure(T, 'l', `after the pool turned over ${n(turnover.keys_delivered)} keys`);
  turned.phase.notes.push(...notes);
  done(turned.phase);
  const fresh2 = await measure(F, 'l0b', 'fresh pool (only ever filled), after the turnover (second database)');

  const rps = (p: Phase, s: 'kme' | 'reference') => p[s]?.rpsMedian;
  const mean = (a?: number, b?: number) => (a && b ? (a + b) / 2 : undefined);
  const freshKme = mean(rps(fresh.phase, 'kme'), rps(fresh2.phase, 'kme'));
  const turnedKme = rps(turned.phase, 'kme');
  const share = (p: Phase) => (rps(p, 'kme') && rps(p, 'reference') ? rps(p, 'kme')! / rps(p, 'reference')! : undefined);
  const freshShare = mean(share(fresh.phase), share(fresh2.phase));
  const turnedShare = share(turned.phase);
  const round = (x: number) => Math.round(x * 100) / 100;
  const result: TurnoverResult = {
    pool_cap: TURNOVER_POOL,
    keys_target: TURNOVER,
    turnover,
    pools: { l0: fresh.pool, l: turned.pool, l0b: fresh2.pool },
    ...(freshKme && turnedKme ? { ratio: round(turnedKme / freshKme) } : {}),
    ...(freshShare && turnedShare ? { ratio_per_reference: round(turnedShare / freshShare) } : {}),
    seconds: Math.round((Date.now() - began) / 1000),
    notes,
  };
  fresh2.phase.notes.push(
    `l over the mean of l0 and l0b (after/before turning over ${n(turnover.keys_delivered)} keys): ${result.ratio ?? '–'}× req/s ` +
      `(${result.ratio_per_reference ?? '–'}× as shares of their reference runs); goal ≥ 0.9×; phase l took ${result.seconds} s`,
  );
  done(fresh2.phase);
  return { result, hosts: [T, F], ...(growth ? { growth } : {}) };
}
