// `npm run bench`: a benchmark of the KME's ETSI 014 API against a bare mutual-TLS reference server, both measured
// in the same run on the same machine (the machines are shared and noisy: read the KME/reference ratio).
//
// Stages: set up real parts (PostgreSQL databases, SoftHSM2 token, dev PKI, the reference server) →
// single KME: fill its key pool with a KME whose simulated link runs very fast → restart it with a link at a
// realistic rate (so that refilling the pool at 200 Mbit/s does not steal CPU from the requests being measured) →
// phases a–f (single-phases.ts) → phase k: the paced load of phase e without and then with ingest from a very fast
// link (ingest-phase.ts) → phase s: phase b's load with the custody log's sealer idle and sealing, and the sealer's
// lag (sealing-phase.ts) → phase l: phase b's load on fresh pools before and after, and on a pool that turned over
// BENCH_TURNOVER keys in between, on databases of its own (turnover-phase.ts) → stop it →
// phase r: two replicas of that KME (one database, one token, one Redis) behind the same clients, beside one of them
// alone, with b's and d's loads, on a database of their own (replica-phase.ts) → stop them →
// network: three KMEs in a line, filled and restarted the same way (network.ts) → phases g–j (network-phases.ts),
// each also compared with its single-KME counterpart → phase v: `kms audit verify` over a synthetic bundle of
// BENCH_VERIFY_EVENTS (1,000,000) custody events (verify-phase.ts; about 30 s) → report.
// Throughout: every KME's resident memory and the age of its oldest erase_queue entry every second (memory.ts,
// erasure.ts); the single KME's database size around the fill
// (bytes per megabit ingested), phase c and l's turnover (bytes per key delivered) (growth.ts).
//
// Run time: about 7 min for a–j; phase k adds 2 × 2 × (2 + BENCH_SECONDS) s and two KME starts (about a minute);
// phase s adds 6 × (2 + BENCH_SECONDS) s and six KME starts (about a minute and a half);
// phase l adds two fills, six KME starts, 3 × 2 × (2 + BENCH_SECONDS) s of measurement and the turnover:
// BENCH_TURNOVER keys at the rate the KME delivers while it ingests (~7,000 keys/s on the 2-core VM: 2,000,000
// keys take ~5 min, the whole phase ~6–7 min). BENCH_PHASES without k and l gives the 7-minute run of before.
//
// Phase r adds a fill, three KME starts and 6 × (2 + BENCH_SECONDS) s (about a minute and a half).
//
// Environment knobs (all optional): DATABASE_URL (admin URL), BENCH_SECONDS (10), BENCH_PHASES ("abcdefkslrghijv"),
// BENCH_FILL (keys to pre-fill, 700000), BENCH_FILL_SECONDS (budget, 75), BENCH_NET_FILL (keys KME_A pre-fills on
// link A-B; BENCH_FILL if only that is set, else 300000), BENCH_NET_FILL_SECONDS (likewise; else 90),
// BENCH_LINK_BPS (link rate while measuring, 1e6), BENCH_INGEST_BPS (link rate while ingest is measured in k and
// while l turns its pool over, 400e6), BENCH_TURNOVER (keys phase l delivers between its measurements, 2000000),
// BENCH_TURNOVER_SECONDS (its time budget, 900), BENCH_TURNOVER_POOL (phase l's pool cap, 200000),
// BENCH_INGEST_BATCH (max_blocks_per_batch of the ingesting KME in k and l's turnover; default: the KME's own; the
// other KMEs keep the bench's 2000),
// BENCH_DB_POOL (KME database pool size; default: the KME's own), BENCH_REPLICA_FILL (keys phase r pre-fills, 250000),
// BENCH_REDIS_URL (the Redis phase r's replicas coordinate through, redis://127.0.0.1:6379),
// BENCH_CPU_PROF=1 (profile every single-KME process, replicas included, with --cpu-prof; print where its time went in each phase),
// BENCH_KME_NODE_ARGS (extra Node options for every KME process, space-separated, e.g. V8 heap flags),
// BENCH_ANALYZE=1 (run ANALYZE after filling, as autovacuum would on a server where it is on; off by default so the
// KME is measured as it behaves by itself), BENCH_KME_LOG_LEVEL (the KMEs' log level, warn; only warn and above is
// summarised), BENCH_OUT (results file, default bench/results/latest.json), BENCH_TRACE (a file to which each paced
// run (e and k, the warm-up included) appends every request's due time and latency: where in the run the slow ones came).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { cleanUpOnSignals, runScript } from './cleanup.js';
import { tlsFor } from './client.js';
import { NET_KMES, startNetwork } from './network.js';
import { networkPhases } from './network-phases.js';
import { printGrowth } from './growth.js';
import { printIngest } from './ingest-phase.js';
import { isStartWindow } from './kme-host.js';
import { eraseLag, printErasure } from './erasure.js';
import { kmeMemory, printMemory } from './memory.js';
import { printProfile, printProfileByWindow, profileByWindow } from './profile.js';
import {
  crossToSingle,
  machine,
  printCrossToSingle,
  printPhase,
  printTargets,
  replicaRatios,
  serverLog,
  writeJson,
  type CrossToSingle,
  type Phase,
} from './report.js';
import {
  ANALYZE,
  CONNECTIONS,
  CPU_PROF,
  DB_POOL,
  FILL_BPS,
  FIXED_RATE,
  FRESH_WORKERS,
  INGEST_BATCH,
  INGEST_BPS,
  LINK_BPS,
  MAX_KEY_COUNT,
  NETWORK_PHASES,
  PHASES,
  REPLICA_FILL,
  REPLICA_PHASES,
  RSS_GOAL_MIB,
  RSS_INTERVAL_MS,
  SECONDS,
  SINGLE_PHASES,
  TURNOVER,
  TURNOVER_POOL,
  TURNOVER_SECONDS,
  VERIFY_EVENTS,
  WARMUP,
} from './settings.js';
import { createPki, createToken, identity, REPO, startReference, tempRoot } from './setup.js';
import { replicaPhase } from './replica-phase.js';
import { singleKme } from './single-kme.js';
import { verifyPhase, type VerifyPhaseResult } from './verify-phase.js';
import { checkTargets } from './targets.js';
import { allWindows, enter, leave } from './timeline.js';

const any = (ids: string) => [...ids].some((id) => PHASES.has(id));
/** The warning every KME on a seeded simulated link prints at each start: expected here, counted apart. */
const SEEDED_NOTICE = /whoever holds the seed holds every key/;

async function main(): Promise<void> {
  cleanUpOnSignals();
  const began = Date.now();
  enter('set-up');
  kmeMemory.start(RSS_INTERVAL_MS);
  eraseLag.start(RSS_INTERVAL_MS);
  console.log(`KMS benchmark — ${SECONDS} s per measurement after ${WARMUP} s of warm-up, phases ${[...PHASES].join('')}`);
  const code = codeVersion();
  console.log(`code: ${code.commit.slice(0, 12)}${code.uncommitted.length ? ` + uncommitted: ${code.uncommitted.join(', ')}` : ''}`);

  // ── Set-up shared by both parts: real parts only.
  const root = tempRoot();
  const token = createToken(root);
  const pki = await createPki(root);
  const A = identity(pki, 'SAE_A');
  const tlsA = tlsFor(A);
  const tlsB = tlsFor(identity(pki, 'SAE_B'));
  const ref = await startReference(pki);
  console.log(`set-up: SoftHSM2 token, dev PKI in ${root}; reference on ${ref.url}`);

  const phases: Phase[] = [];
  const done = (p: Phase) => {
    phases.push(p);
    printPhase(p, phases.find((q) => q.id === p.counterpart));
  };

  // ── Single KME (a–f, k, l), stopped before the network starts so that it takes no CPU from it.
  const single = any(SINGLE_PHASES) ? await singleKme(root, pki, token, ref.url, done) : undefined;

  // ── Two replicas of that KME (r), on a database of their own, stopped before the network starts.
  const replicas = any(REPLICA_PHASES) ? await replicaPhase({ root, pki, token, referenceUrl: ref.url }, done) : [];

  // ── Network of three KMEs (g–j).
  let network: Awaited<ReturnType<typeof startNetwork>> | undefined;
  if (any(NETWORK_PHASES)) {
    network = await startNetwork(root, pki, token);
    await networkPhases({ net: network, referenceUrl: ref.url, A, tlsA, tlsB }, done);
    await network.stop(); // before reading the logs: complete only once the KMEs have exited
  }
  leave();
  // ── Offline verification of a million-event custody log (phase v: no KME runs meanwhile).
  let verify: VerifyPhaseResult | undefined;
  if (PHASES.has('v')) {
    enter('v');
    verify = await verifyPhase({ events: VERIFY_EVENTS, dir: root });
    leave();
    const rate = Math.round(verify.events / verify.verifySeconds).toLocaleString('en-US');
    console.log(`\n── v. kms audit verify over ${verify.events.toLocaleString('en-US')} events (a synthetic bundle of ${(verify.bundleBytes / 1e6).toFixed(0)} MB, bench/verify-phase.ts)`);
    console.log(`   ${verify.verifySeconds.toFixed(2)} s (${rate} events/s, start-up included), verdict ${verify.ok ? 'OK' : `FAILED: ${verify.problem}`}`);
  }
  kmeMemory.sample(); // a last look before the report (every KME has stopped: nothing is read after it exits)
  kmeMemory.stop();
  const memory = kmeMemory.report(RSS_GOAL_MIB);
  const erasure = await eraseLag.stop();

  // ── Results.
  const kmeChildren = [...(single?.children ?? []), ...replicas.flatMap((h) => h.children)];
  const kmeLog = kmeChildren.length ? serverLog(kmeChildren) : undefined;
  const networkLogs = network
    ? Object.fromEntries(NET_KMES.map((k) => [k.id, serverLog(network!.children.filter((c) => c.name === k.id), SEEDED_NOTICE, 'seeded-link notice at each start')]))
    : undefined;
  const refLog = serverLog([ref.child], /^REF_LISTENING /); // the ready line is expected
  const cross = phases
    .filter((p) => p.counterpart)
    .map((p) => {
      const s = phases.find((q) => q.id === p.counterpart);
      return s ? crossToSingle(p, s) : undefined;
    })
    .filter((r): r is CrossToSingle => r !== undefined);
  const targetsMet = checkTargets(phases, memory, single, verify);
  // Per phase (the clock windows of timeline.ts), from the profiles of every single-KME process, and of each network
  // KME on its own over the network phases (in g–j each works for the others).
  const profileDirs = [...(single?.profileDirs ?? []), ...replicas.flatMap((h) => h.profileDirs)];
  const measured = allWindows().filter((w) => !isStartWindow(w.label));
  const networkProfile = CPU_PROF && network
    ? NET_KMES.flatMap((k) =>
        profileByWindow(network!.profileDirs[k.id], measured.filter((w) => NETWORK_PHASES.includes(w.label))).map((r) => ({ ...r, label: `${r.label} at ${k.id}` })),
      )
    : [];
  const singleProfile = CPU_PROF && profileDirs.length ? profileByWindow(profileDirs, measured) : [];
  const profileByPhase = CPU_PROF ? [...singleProfile, ...networkProfile] : undefined;
  printCrossToSingle(cross);
  if (single?.ingest) {
    console.log('\n── Ingest with concurrent delivery (phase k)');
    printIngest(single.ingest);
  }
  if (single?.growth) printGrowth(single.growth);
  printMemory(memory);
  printErasure(erasure);
  printTargets(targetsMet);
  if (kmeLog) {
    console.log(`\n── KME log (warn and above): ${kmeLog.count} line(s)`);
    for (const l of kmeLog.sample) console.log(`   ${l}`);
  }
  for (const [id, log] of Object.entries(networkLogs ?? {})) {
    console.log(`\n── ${id} log (warn and above): ${log.count} line(s)` +
      (log.expected?.count ? `, besides ${log.expected.count} ${log.expected.what}` : ''));
    for (const l of log.sample) console.log(`   ${l}`);
  }
  if (refLog.count) console.log(`── reference server log: ${refLog.count} line(s)\n   ${refLog.sample.join('\n   ')}`);
  if (single?.profile) printProfile(single.profile);
  if (profileByPhase) printProfileByWindow(profileByPhase);

  const out = process.env.BENCH_OUT ?? join(REPO, 'bench', 'results', 'latest.json');
  writeJson(out, {
    date: new Date().toISOString(),
    machine: machine(),
    code,
    settings: {
      seconds: SECONDS,
      warmup_seconds: WARMUP,
      connections: CONNECTIONS,
      fixed_rate: FIXED_RATE,
      fresh_connection_workers: FRESH_WORKERS,
      key_size: 256,
      max_key_count: MAX_KEY_COUNT,
      fill_link_bits_per_second: FILL_BPS,
      measure_link_bits_per_second: LINK_BPS,
      kme_db_pool_size: DB_POOL ?? 'KME default',
      cpu_profile: CPU_PROF,
      ingest_link_bits_per_second: INGEST_BPS,
      ingest_max_blocks_per_batch: INGEST_BATCH ?? 'KME default',
      turnover_keys: TURNOVER,
      turnover_seconds_budget: TURNOVER_SECONDS,
      turnover_pool: TURNOVER_POOL,
      replica_fill: REPLICA_FILL,
      rss_interval_seconds: RSS_INTERVAL_MS / 1000,
      postgres_autovacuum: single?.db.autovacuum ?? network?.facts.postgres_autovacuum,
      analyzed_after_fill: ANALYZE,
      phases: [...PHASES].join(''),
    },
    fill: single?.fill,
    ingest_with_delivery: single?.ingest,
    turnover: single?.turnover,
    growth: single?.growth,
    sealing: single?.sealing,
    verify,
    memory,
    erasure,
    network: network
      ? {
          kmes: 'KME_A (SAE_A) — KME_B (SAE_B) — KME_C (SAE_C); links A-B and B-C, seeded simulators; SoftHSM2 KEK per KME',
          ...network.facts,
        }
      : undefined,
    phases: phases.map((p) => ({
      ...p,
      kme_keys_per_second: p.kme && p.keysPerRequest ? p.kme.rpsMedian * p.keysPerRequest : undefined,
      ratio_kme_to_reference: p.kme && p.reference?.rpsMedian ? p.kme.rpsMedian / p.reference.rpsMedian : undefined,
      ratio_replicas: replicaRatios(p),
      ratio_to_single: cross.find((r) => r.phase === p.id),
    })),
    cross_to_single: cross,
    targets: targetsMet,
    kme_log: kmeLog,
    network_kme_logs: networkLogs,
    reference_log: refLog,
    cpu_profile: single?.profile,
    cpu_profile_by_phase: profileByPhase,
    total_seconds: Math.round((Date.now() - began) / 1000),
  });
  console.log(`\nresults written to ${out} (${Math.round((Date.now() - began) / 1000)} s in all)`);
}

/** Which code was measured: the commit, and the files that differed from it (the tree may be mid-change). */
function codeVersion() {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO, encoding: 'utf8' }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), uncommitted: git('status', '--porcelain', '--', 'src', 'migrations').split('\n').map((l) => l.trim()).filter(Boolean) };
  } catch {
    return { commit: 'unknown (no git)', uncommitted: [] };
  }
}

runScript('benchmark', main);
