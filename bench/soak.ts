// `npm run soak` (not in CI): does the KME's memory stay flat under a long mixed load? One KME on PostgreSQL and
// SoftHSM2, set up as the bench sets up its single KME (setup.ts, kme-host.ts): a fast link fills a pool, then the
// KME restarts with a link that refills at least twice as fast as the load takes keys, so the pool never runs dry
// and ingest runs all along. Then SOAK_SECONDS of open-loop mixed load (mixed-load.ts): enc_keys for 1 key and for
// 128 keys, dec_keys for keys delivered, status. Every SOAK_SAMPLE_SECONDS: the KME's VmRSS, the pool, and what the
// load saw since the last sample. At the end: first, last and highest RSS and the slope in MiB per minute, over
// the whole run and over its second half (the first half includes the heap growing to its working size), and
// whether that is flat (second-half slope ≤ SOAK_FLAT_MIB_PER_MIN). A 10-minute soak cannot see a leak much slower
// than that: a sawtooth of garbage collections moves RSS by megabytes between samples.
//
// Knobs: SOAK_SECONDS (600), SOAK_SAMPLE_SECONDS (10), SOAK_SCALE (multiplies every rate of the mix, 1),
// SOAK_FLAT_MIB_PER_MIN (1), SOAK_OUT (results file, bench/results/soak.json); DATABASE_URL, BENCH_DB_POOL and
// BENCH_KME_LOG_LEVEL as for the bench.
import { join } from 'node:path';
import { cleanUpOnSignals, runScript } from './cleanup.js';
import { KmeHost } from './kme-host.js';
import { fillPool } from './measure.js';
import { readRss } from './memory.js';
import { KINDS, MixedLoad, type Kind, type KindStats, type Mix } from './mixed-load.js';
import { machine, serverLog, writeJson } from './report.js';
import { FILL_BPS, FILL_SECONDS } from './settings.js';
import { createPki, createToken, identity, REPO, tempRoot } from './setup.js';

const num = (name: string, def: number) => (process.env[name] ? Number(process.env[name]) : def);
const SOAK_SECONDS = num('SOAK_SECONDS', 600);
const SAMPLE_SECONDS = num('SOAK_SAMPLE_SECONDS', 10);
const SCALE = num('SOAK_SCALE', 1);
const FLAT_MIB_PER_MIN = num('SOAK_FLAT_MIB_PER_MIN', 1);
const POOL = 200_000;
/**
 * Requests per second of each kind at SOAK_SCALE 1: about 356 keys/s delivered, 162 req/s — a fifth of phase b's
 * rate on the 2-core machine, so that the KME keeps up and what is measured is memory at a steady state, not a
 * queue of requests growing.
 */
const MIX: Mix = { enc1: 100 * SCALE, enc128: 2 * SCALE, dec: 50 * SCALE, status: 10 * SCALE };
const KEYS_PER_SECOND = MIX.enc1 + 128 * MIX.enc128;

interface Sample {
  t_s: number;
  rss_mib: number;
  pool: number;
  load: Record<Kind, KindStats>;
}

const MiB = 2 ** 20;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

/** Least-squares slope of RSS against time, in MiB per minute. */
function slope(samples: Sample[]): number {
  if (samples.length < 2) return 0;
  const xs = samples.map((s) => s.t_s / 60);
  const ys = samples.map((s) => s.rss_mib);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den > 0 ? num / den : 0;
}

function describe(s: Sample, secondsSince: number): string {
  const rate = (k: Kind) => Math.round(s.load[k].ok / secondsSince);
  const bad = KINDS.reduce((n, k) => n + Object.values(s.load[k].non2xx).reduce((a, b) => a + b, 0) + s.load[k].errors, 0);
  const skipped = KINDS.reduce((n, k) => n + s.load[k].skipped, 0);
  return `  ${String(Math.round(s.t_s)).padStart(5)} s  RSS ${s.rss_mib.toFixed(1).padStart(6)} MiB  pool ${s.pool.toLocaleString('en-US').padStart(8)}  ` +
    `req/s enc1 ${rate('enc1')}, enc128 ${rate('enc128')}, dec ${rate('dec')}, status ${rate('status')}; ` +
    `p99 ms enc1 ${s.load.enc1.p99Ms.toFixed(0)}, enc128 ${s.load.enc128.p99Ms.toFixed(0)}, dec ${s.load.dec.p99Ms.toFixed(0)}` +
    (bad ? `; ${bad} failed` : '') +
    (skipped ? `; ${skipped} skipped` : '');
}

async function main(): Promise<void> {
  cleanUpOnSignals();
  const began = Date.now();
  const root = tempRoot();
  const token = createToken(root);
  const pki = await createPki(root);
  const host = await KmeHost.create(root, pki, token, { profile: false });
  // Refill at twice what the load takes: the pool stays full and ingest never stops.
  const linkBps = Math.max(1e6, 2 * KEYS_PER_SECOND * 256);
  console.log(`KMS soak — ${SOAK_SECONDS} s of mixed load (${KINDS.map((k) => `${k} ${MIX[k]}/s`).join(', ')}; ~${KEYS_PER_SECOND} keys/s), ` +
    `RSS every ${SAMPLE_SECONDS} s; database ${host.databaseName}`);

  await host.start({ rateBps: FILL_BPS, maxKeyCount: POOL }, 'soak fill');
  // Full before the load starts: from then on ingest refills what is delivered, as it would at a steady state.
  await fillPool(host.stored, POOL * 0.98, FILL_SECONDS, 'the soak pool');
  const kme = await host.start({ rateBps: linkBps, maxKeyCount: POOL }, 'soak');
  const pid = kme.proc.pid!;
  console.log(`KME restarted (pid ${pid}) with a ${linkBps / 1e6} Mbit/s link; pool ${(await host.stored()).toLocaleString('en-US')} keys\n`);

  const load = new MixedLoad(host.url, host.A, identity(pki, 'SAE_B'), MIX);
  const samples: Sample[] = [];
  const start = performance.now();
  let lastAt = start;
  const take = async () => {
    const now = performance.now();
    const rss = readRss(pid);
    if (rss === undefined) throw new Error(`the KME (pid ${pid}) is gone:\n${kme.lines.slice(-20).join('\n')}`);
    const s: Sample = { t_s: round((now - start) / 1000), rss_mib: round(rss / MiB), pool: await host.stored().catch(() => NaN), load: load.takeInterval() };
    samples.push(s);
    console.log(describe(s, Math.max((now - lastAt) / 1000, 1e-3)));
    lastAt = now;
  };
  await take(); // the KME at rest, before any load
  load.start();
  for (let i = 1; i * SAMPLE_SECONDS <= SOAK_SECONDS; i++) {
    await new Promise((r) => setTimeout(r, Math.max(0, start + i * SAMPLE_SECONDS * 1000 - performance.now())));
    await take();
  }
  await load.stop();
  await host.stop();

  const rss = samples.map((s) => s.rss_mib);
  const secondHalf = samples.filter((s) => s.t_s >= SOAK_SECONDS / 2);
  const summary = {
    first_mib: rss[0]!,
    last_mib: rss[rss.length - 1]!,
    max_mib: Math.max(...rss),
    slope_mib_per_minute: round(slope(samples), 2),
    slope_second_half_mib_per_minute: round(slope(secondHalf), 2),
    flat_threshold_mib_per_minute: FLAT_MIB_PER_MIN,
    flat: slope(secondHalf) <= FLAT_MIB_PER_MIN,
  };
  const failed = samples.reduce((n, s) => n + KINDS.reduce((m, k) => m + Object.values(s.load[k].non2xx).reduce((a, b) => a + b, 0) + s.load[k].errors, 0), 0);
  console.log(`\n── RSS: first ${summary.first_mib} MiB, last ${summary.last_mib} MiB, max ${summary.max_mib} MiB; ` +
    `slope ${summary.slope_mib_per_minute} MiB/min over the run, ${summary.slope_second_half_mib_per_minute} MiB/min over its second half`);
  console.log(`   memory is ${summary.flat ? 'FLAT' : 'NOT FLAT'} (second-half slope ${summary.flat ? '≤' : '>'} ${FLAT_MIB_PER_MIN} MiB/min)` +
    (failed ? `; ${failed} requests failed (see the samples)` : '; no request failed'));
  const log = serverLog([kme]);
  if (log.count) console.log(`\n── KME log (warn and above): ${log.count} line(s)\n   ${log.sample.join('\n   ')}`);

  const out = process.env.SOAK_OUT ?? join(REPO, 'bench', 'results', 'soak.json');
  writeJson(out, {
    date: new Date().toISOString(),
    machine: machine(),
    settings: { seconds: SOAK_SECONDS, sample_seconds: SAMPLE_SECONDS, mix_per_second: MIX, link_bits_per_second: linkBps, pool_cap: POOL },
    summary,
    samples,
    kme_log: log,
    total_seconds: Math.round((Date.now() - began) / 1000),
  });
  console.log(`\nresults written to ${out}`);
}

runScript('soak', main);
