// `npm run bench`: a benchmark of the KME's ETSI 014 API against a bare mutual-TLS reference server, both measured
// in the same run on the same machine (the machines are shared and noisy: read the KME/reference ratio).
//
// Stages: set up real parts (PostgreSQL databases, SoftHSM2 token, dev PKI, the reference server) →
// single KME: fill its key pool with a KME whose simulated link runs very fast → restart it with a link at a
// realistic rate (so that refilling the pool at 200 Mbit/s does not steal CPU from the requests being measured) →
// phases a–f (single-phases.ts) → stop it →
// network: three KMEs in a line, filled and restarted the same way (network.ts) → phases g–j (network-phases.ts),
// each also compared with its single-KME counterpart → report.
//
// Environment knobs (all optional): DATABASE_URL (admin URL), BENCH_SECONDS (10), BENCH_PHASES ("abcdefghij"),
// BENCH_FILL (keys to pre-fill, 700000), BENCH_FILL_SECONDS (budget, 75), BENCH_NET_FILL (keys KME_A pre-fills on
// link A-B; BENCH_FILL if only that is set, else 300000), BENCH_NET_FILL_SECONDS (likewise; else 90),
// BENCH_LINK_BPS (link rate while measuring, 1e6), BENCH_DB_POOL (KME database pool size; default: the KME's own),
// BENCH_CPU_PROF=1 (profile the measured single KME with --cpu-prof and print where its time went),
// BENCH_ANALYZE=1 (run ANALYZE after filling, as autovacuum would on a server where it is on; off by default so the
// KME is measured as it behaves by itself), BENCH_KME_LOG_LEVEL (the KMEs' log level, warn; only warn and above is
// summarised), BENCH_OUT (results file, default bench/results/latest.json).
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, cleanUpOnSignals } from './cleanup.js';
import { tlsFor } from './client.js';
import { NET_KMES, startNetwork } from './network.js';
import { networkPhases } from './network-phases.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import {
  crossToSingle,
  machine,
  printCrossToSingle,
  printPhase,
  printTargets,
  serverLog,
  writeJson,
  type CrossToSingle,
  type Phase,
  type Target,
} from './report.js';
import {
  ANALYZE,
  CONNECTIONS,
  CPU_PROF,
  DB_POOL,
  FILL_BPS,
  FIXED_RATE,
  FRESH_WORKERS,
  LINK_BPS,
  MAX_KEY_COUNT,
  NETWORK_PHASES,
  PHASES,
  SECONDS,
  SINGLE_PHASES,
  WARMUP,
} from './settings.js';
import { createPki, createToken, identity, REPO, startReference, tempRoot } from './setup.js';
import { singleKme } from './single-kme.js';

const any = (ids: string) => [...ids].some((id) => PHASES.has(id));
/** The warning every KME on a seeded simulated link prints at each start: expected here, counted apart. */
const SEEDED_NOTICE = /whoever holds the seed holds every key/;

async function main(): Promise<void> {
  cleanUpOnSignals();
  const began = Date.now();
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

  // ── Single KME (a–f), stopped before the network starts so that it takes no CPU from it.
  const single = any(SINGLE_PHASES) ? await singleKme(root, pki, token, ref.url, done, readProfile) : undefined;

  // ── Network of three KMEs (g–j).
  let network: Awaited<ReturnType<typeof startNetwork>> | undefined;
  if (any(NETWORK_PHASES)) {
    network = await startNetwork(root, pki, token);
    await networkPhases({ net: network, referenceUrl: ref.url, A, tlsA, tlsB }, done);
    await network.stop(); // before reading the logs: complete only once the KMEs have exited
  }

  // ── Results.
  const kmeLog = single ? serverLog(single.children) : undefined;
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
  const targetsMet = checkTargets(phases);
  printCrossToSingle(cross);
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
      postgres_autovacuum: single?.db.autovacuum ?? network?.facts.postgres_autovacuum,
      analyzed_after_fill: ANALYZE,
      phases: [...PHASES].join(''),
    },
    fill: single?.fill,
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
      ratio_to_single: cross.find((r) => r.phase === p.id),
    })),
    cross_to_single: cross,
    targets: targetsMet,
    kme_log: kmeLog,
    network_kme_logs: networkLogs,
    reference_log: refLog,
    cpu_profile: single?.profile,
    total_seconds: Math.round((Date.now() - began) / 1000),
  });
  console.log(`\nresults written to ${out} (${Math.round((Date.now() - began) / 1000)} s in all)`);
}

function checkTargets(phases: Phase[]): Target[] {
  const get = (id: string) => phases.find((p) => p.id === id)?.kme;
  const b = get('b');
  const c = get('c');
  const e = get('e');
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  return [
    { what: 'enc_keys, 1 key per request (phase b)', goal: '≥ 2,000 req/s', measured: b ? `${n(b.rpsMedian)} req/s` : '–', met: b ? b.rpsMedian >= 2000 && b.non2xx === 0 : null },
    {
      what: `enc_keys latency at ${FIXED_RATE} req/s (phase e)`,
      goal: 'p99 ≤ 20 ms',
      measured: e ? `p99 ${e.p99Ms.toFixed(1)} ms, p50 ${e.p50Ms.toFixed(1)} ms at ${n(e.rpsMean)} req/s` : '–',
      met: e ? e.p99Ms <= 20 && e.non2xx === 0 && e.rpsMean >= FIXED_RATE * 0.95 : null,
    },
    { what: 'enc_keys, 128 keys per request (phase c)', goal: '≥ 20,000 keys/s', measured: c ? `${n(c.rpsMedian * 128)} keys/s` : '–', met: c ? c.rpsMedian * 128 >= 20_000 && c.non2xx === 0 : null },
  ];
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

function readProfile(dir: string): ProfileSummary | undefined {
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  return file ? summarizeProfile(join(dir, file)) : undefined;
}

function printProfile(p: ProfileSummary) {
  console.log(`\n── KME CPU profile (measured KME process, ${p.totalMs.toLocaleString('en-US')} ms sampled)`);
  console.log('   by area:');
  for (const a of p.byArea.slice(0, 12)) console.log(`     ${a.pct.toFixed(1).padStart(5)}%  ${a.area}`);
  console.log('   top functions by self time:');
  for (const f of p.topFunctions) console.log(`     ${f.pct.toFixed(1).padStart(5)}%  ${f.fn}  ${f.where}`);
}

main()
  .catch((err: Error) => {
    console.error(`\nbenchmark failed: ${err.stack ?? err}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await cleanup();
    // autocannon and agents may leave timers behind; the run is over.
    process.exit(process.exitCode ?? 0);
  });
