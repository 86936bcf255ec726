// Phase l: does a pool that has turned over millions of keys serve as fast as a fresh one? On a database of its
// own (fresh means never delivered from), with a pool cap of BENCH_TURNOVER_POOL keys:
//   fill with the fast link → restart with the measuring link → l0: phase b's load (1 key, keep-alive, KME and
//   reference) on the fresh pool → restart with the ingest link (BENCH_INGEST_BPS) → deliver BENCH_TURNOVER keys
//   with 128-key requests at full speed while ingest refills → wait until the pool is refilled to its cap →
//   restart with the measuring link → l: phase b's load again.
// Both measurements run on a fresh process, on a pool of the same size, with the same link: only the history
// differs. The reference runs beside each, so the ratio can also be read net of the machine's drift.
//
// Run time: about 2 × (2 × (WARMUP + SECONDS)) s of measurement, four KME starts, the fill (BENCH_TURNOVER_POOL at
// the KME's ingest rate) and the turnover itself, which is bounded by how fast the KME both delivers and ingests
// on the same cores (BENCH_TURNOVER / that rate; at most BENCH_TURNOVER_SECONDS).
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
  pool_before_fresh: number;
  pool_before_turned: number;
  /** KME req/s after the turnover over before it (goal ≥ 0.9). */
  ratio?: number;
  /** The same with each first divided by its own reference run (the machine's drift cancels). */
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

export async function turnoverPhase(
  ctx: TurnoverContext,
  done: (p: Phase) => void,
): Promise<{ result: TurnoverResult; host: KmeHost; growth?: DeliveryGrowth }> {
  const began = Date.now();
  const notes: string[] = [];
  const host = await KmeHost.create(ctx.root, ctx.pki, ctx.token, { profile: CPU_PROF });
  console.log(`\nphase l: database ${host.databaseName}, pool cap ${TURNOVER_POOL.toLocaleString('en-US')} keys, ` +
    `turnover of ${TURNOVER.toLocaleString('en-US')} keys (at most ${TURNOVER_SECONDS} s)`);
  const link = (rateBps: number) => ({ rateBps, maxKeyCount: TURNOVER_POOL });

  await host.start(link(FILL_BPS), 'l fill');
  await fillPool(host.stored, TURNOVER_POOL, FILL_SECONDS, "phase l's pool");

  const measure = async (id: 'l0' | 'l', what: string): Promise<{ phase: Phase; pool: number }> => {
    await host.start(link(LINK_BPS), id);
    const pool = await host.stored();
    const phase: Phase = { id, title: `GET enc_keys?number=1 (256 bits), ${what}`, keysPerRequest: 1, rpsMethod: AUTOCANNON_RPS, notes: [] };
    console.log(`\n[${id}] pool ${pool.toLocaleString('en-US')} keys`);
    await twoServers(phase, (s) => ({ url: s === 'kme' ? host.url : ctx.referenceUrl, tls: ctx.tlsA, path: ENC1 }), pool);
    return { phase, pool };
  };

  const fresh = await measure('l0', `fresh pool (only ever filled), fresh process`);
  done(fresh.phase);

  await host.start(link(INGEST_BPS), 'l turnover');
  const before = await growthPoint(host.databaseUrl, host.poolReading);
  console.log(`[l] turning the pool over: ${TURNOVER.toLocaleString('en-US')} keys, 128 per request, ingest at ${INGEST_BPS / 1e6} Mbit/s refilling…`);
  let last = { delivered: 0, seconds: 0 };
  const turnover = await deliverKeys(host.url, host.A, {
    keys: TURNOVER,
    maxSeconds: TURNOVER_SECONDS,
    progress: async (delivered, seconds) => {
      const rate = Math.round((delivered - last.delivered) / (seconds - last.seconds));
      last = { delivered, seconds };
      const pool = await host.stored().catch(() => NaN);
      console.log(`  ${delivered.toLocaleString('en-US')} keys delivered in ${seconds.toFixed(0)} s (+${rate.toLocaleString('en-US')}/s); pool ${pool.toLocaleString('en-US')}`);
    },
  });
  console.log(`  turnover: ${turnover.keys_delivered.toLocaleString('en-US')} keys in ${turnover.seconds} s (${turnover.keys_per_second.toLocaleString('en-US')} keys/s)` +
    (Object.keys(turnover.refused).length ? `; refused ${JSON.stringify(turnover.refused)} (503: pool empty, ingest behind)` : '') +
    (turnover.errors ? `; ${turnover.errors} network errors` : ''));
  if (turnover.stopped_early) notes.push(`turnover stopped early (${turnover.stopped_early}) at ${turnover.keys_delivered.toLocaleString('en-US')} keys`);
  // Refill to the cap, so that l measures a pool of the same size as l0 did.
  const refill = await fillPool(host.stored, Math.floor(TURNOVER_POOL * 0.98), 120, "phase l's pool (refill)");
  if (refill.stored < TURNOVER_POOL * 0.98) notes.push(`pool refilled only to ${refill.stored.toLocaleString('en-US')} keys before l`);
  const after = await growthPoint(host.databaseUrl, host.poolReading);
  const growth = deliveryGrowth(`phase l turnover, ${turnover.keys_delivered.toLocaleString('en-US')} keys`, before, after, {
    delivered: turnover.keys_delivered,
    ingestBytesPerKey: ctx.ingestBytesPerKey,
  });

  const turned = await measure('l', `after the pool turned over ${turnover.keys_delivered.toLocaleString('en-US')} keys, fresh process`);
  await host.stop();

  const rps = (p: Phase, s: 'kme' | 'reference') => p[s]?.rpsMedian;
  const k0 = rps(fresh.phase, 'kme');
  const k1 = rps(turned.phase, 'kme');
  const r0 = rps(fresh.phase, 'reference');
  const r1 = rps(turned.phase, 'reference');
  const round = (x: number) => Math.round(x * 100) / 100;
  const result: TurnoverResult = {
    pool_cap: TURNOVER_POOL,
    keys_target: TURNOVER,
    turnover,
    pool_before_fresh: fresh.pool,
    pool_before_turned: turned.pool,
    ...(k0 && k1 ? { ratio: round(k1 / k0) } : {}),
    ...(k0 && k1 && r0 && r1 ? { ratio_per_reference: round(k1 / r1 / (k0 / r0)) } : {}),
    seconds: Math.round((Date.now() - began) / 1000),
    notes,
  };
  turned.phase.notes.push(
    `l/l0 (after/before turning over ${turnover.keys_delivered.toLocaleString('en-US')} keys): ${result.ratio ?? '–'}× req/s ` +
      `(${result.ratio_per_reference ?? '–'}× as shares of their reference runs); goal ≥ 0.9×; phase l took ${result.seconds} s`,
    ...notes,
  );
  done(turned.phase);
  return { result, host, ...(growth ? { growth } : {}) };
}
