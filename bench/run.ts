// `npm run bench`: a benchmark of the KME's ETSI 014 API against a bare mutual-TLS reference server, both measured
// in the same run on the same machine (the machines are shared and noisy: read the KME/reference ratio).
//
// Stages: set up real parts (PostgreSQL database, SoftHSM2 token, dev PKI) → fill the key pool with a KME whose
// simulated link runs very fast → restart the KME with a link at a realistic rate (so that refilling the pool at
// 200 Mbit/s does not steal CPU from the requests being measured) → phases a–f against both servers → report.
//
// Environment knobs (all optional): DATABASE_URL (admin URL), BENCH_SECONDS (10), BENCH_PHASES ("abcdef"),
// BENCH_FILL (keys to pre-fill, 700000), BENCH_FILL_SECONDS (budget, 75), BENCH_LINK_BPS (link rate while
// measuring, 1e6), BENCH_DB_POOL (KME database pool size; default: the KME's own), BENCH_CPU_PROF=1 (profile the
// measured KME with --cpu-prof and print where its time went), BENCH_ANALYZE=1 (run ANALYZE after filling, as
// autovacuum would on a server where it is on; off by default so the KME is measured as it behaves by itself),
// BENCH_OUT (results file, default bench/results/latest.json).
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Child } from './children.js';
import { cleanup, cleanUpOnSignals, onCleanup } from './cleanup.js';
import { JsonClient, tlsFor, type Identity } from './client.js';
import { cannon, freshConnections, paced, type CannonSpec } from './load.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import { machine, printPhase, printTargets, writeJson, type Phase, type Target } from './report.js';
import {
  createDatabase,
  createPki,
  databaseFacts,
  createToken,
  freePort,
  identity,
  REPO,
  startKme,
  startReference,
  tempRoot,
  writeKmeConfig,
} from './setup.js';

const num = (name: string, def: number) => (process.env[name] ? Number(process.env[name]) : def);
const ADMIN_URL = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
const SECONDS = num('BENCH_SECONDS', 10);
const WARMUP = 2;
const PHASES = new Set((process.env.BENCH_PHASES ?? 'abcdef').split(''));
const FILL_TARGET = num('BENCH_FILL', 700_000);
const FILL_SECONDS = num('BENCH_FILL_SECONDS', 75);
const FILL_BPS = 200e6; // the pool-filling KME: ~780k blocks/s offered, far more than ingest can take
const LINK_BPS = num('BENCH_LINK_BPS', 1e6); // while measuring: a fast real QKD link (~3,900 keys of 256 bits/s)
const MAX_KEY_COUNT = 1_500_000;
const DB_POOL = process.env.BENCH_DB_POOL ? Number(process.env.BENCH_DB_POOL) : undefined;
const CPU_PROF = process.env.BENCH_CPU_PROF === '1';
const ANALYZE = process.env.BENCH_ANALYZE === '1';
const FRESH_WORKERS = 16;
const FIXED_RATE = 500;

// Keys each phase may take from the pool (warm-up included); phase c gets whatever the others leave.
const PLAN: Record<string, number> = { b: 40_000, d: 40_000, e: 7_000, f: 30_000 };

const ENC1 = '/api/v1/keys/SAE_B/enc_keys?number=1&size=256';

async function main(): Promise<void> {
  cleanUpOnSignals();
  const began = Date.now();
  console.log(`KMS benchmark — ${SECONDS} s per measurement after ${WARMUP} s of warm-up, phases ${[...PHASES].join('')}`);
  const code = codeVersion();
  console.log(`code: ${code.commit.slice(0, 12)}${code.uncommitted.length ? ` + uncommitted: ${code.uncommitted.join(', ')}` : ''}`);

  // ── Set-up: real parts only.
  const root = tempRoot();
  const databaseUrl = await createDatabase(ADMIN_URL);
  const token = createToken(root);
  const pki = await createPki(root);
  const port = await freePort();
  const A = identity(pki, 'SAE_A');
  const B = identity(pki, 'SAE_B');
  const tlsA = tlsFor(A);
  const tlsB = tlsFor(B);
  const kmeUrl = `https://127.0.0.1:${port}`;
  const kmeEnv = { databaseUrl, token };
  const kmeChildren: Child[] = [];
  console.log(`set-up: database ${new URL(databaseUrl).pathname.slice(1)}, SoftHSM2 token, dev PKI in ${root}`);

  const config = (rate: number) =>
    writeKmeConfig(root, pki, token, { port, rateBitsPerSecond: rate, maxKeyCount: MAX_KEY_COUNT, dbPoolSize: DB_POOL });
  const filler = await startKme(config(FILL_BPS), kmeEnv, port, A);
  kmeChildren.push(filler);
  const ref = await startReference(pki);
  console.log(`KME on ${kmeUrl}, reference on ${ref.url}`);

  const status = new JsonClient(kmeUrl, A);
  onCleanup('close the status client', () => status.close());
  const stored = async () => {
    const r = await status.call('GET', '/api/v1/keys/SAE_B/status');
    if (r.status !== 200) throw new Error(`status answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.stored_key_count as number;
  };

  // ── Fill the pool with the fast link, then restart the KME with the measuring link rate.
  const fill = await fillPool(stored, FILL_TARGET, FILL_SECONDS);
  await filler.stop();
  const db = await databaseFacts(databaseUrl, ANALYZE);
  if (db.autovacuum !== 'on') {
    console.log(`note: autovacuum is ${db.autovacuum} on this PostgreSQL: tables are never analyzed, so the planner sees ` +
      `empty statistics${ANALYZE ? ' (ANALYZE was run after filling: BENCH_ANALYZE=1)' : ' (BENCH_ANALYZE=1 runs ANALYZE after filling)'}`);
  }
  const profDir = join(root, 'prof');
  mkdirSync(profDir);
  const kme = await startKme(config(LINK_BPS), kmeEnv, port, A, CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []);
  kmeChildren.push(kme);
  console.log(`KME restarted with a ${LINK_BPS / 1e6} Mbit/s link for the measurements (pool: ${(await stored()).toLocaleString('en-US')} keys)`);

  const phases: Phase[] = [];
  const targets = { kme: kmeUrl, reference: ref.url };

  /** Keys this phase may use: what is stored minus what later phases are planned to need. */
  const allowance = async (id: string) => {
    const now = await stored();
    const later = [...PHASES].filter((p) => p > id && PLAN[p]).reduce((n, p) => n + PLAN[p]!, 0);
    const room = Math.max(0, now - later);
    return { now, keys: PLAN[id] ? Math.min(PLAN[id]!, room) : room };
  };

  /** Warm-up then measurement, against each server in turn; the KME's run may be capped by the pool. */
  const twoServers = async (phase: Phase, spec: (server: 'kme' | 'reference') => Omit<CannonSpec, 'durationS'>, keysCap?: number) => {
    for (const server of ['kme', 'reference'] as const) {
      const s = spec(server);
      const cap = server === 'kme' && keysCap !== undefined ? Math.floor(keysCap / Math.max(phase.keysPerRequest, 1)) : undefined;
      if (cap !== undefined && cap < 10 * 32) {
        phase.notes.push(`KME run skipped: the pool budget (${keysCap} keys) is too small for this phase`);
        continue;
      }
      const share = (seconds: number) => (cap === undefined ? undefined : Math.floor((cap * seconds) / (WARMUP + SECONDS)));
      await cannon({ ...s, durationS: WARMUP, maxRequests: share(WARMUP) });
      const r = await cannon({ ...s, durationS: SECONDS, maxRequests: share(SECONDS) });
      phase[server] = r;
      if (cap !== undefined && r.durationS < SECONDS - 0.5) {
        phase.notes.push(`KME run stopped after ${r.requests} requests (${r.durationS} s): key pool budget`);
      }
    }
  };
  const AUTOCANNON_RPS = `median of ${SECONDS} one-second samples (autocannon, 32 keep-alive connections)`;

  if (PHASES.has('a')) {
    const phase: Phase = { id: 'a', title: 'GET status', keysPerRequest: 0, rpsMethod: AUTOCANNON_RPS, notes: [] };
    await twoServers(phase, (s) => ({ url: targets[s], tls: tlsA, path: '/api/v1/keys/SAE_B/status' }));
    done(phase);
  }

  if (PHASES.has('b')) {
    const { now, keys } = await allowance('b');
    const phase: Phase = { id: 'b', title: 'GET enc_keys?number=1 (256 bits)', keysPerRequest: 1, rpsMethod: AUTOCANNON_RPS, notes: [] };
    console.log(`\n[b] pool ${now.toLocaleString('en-US')} keys; this phase may use ${keys.toLocaleString('en-US')}`);
    await twoServers(phase, (s) => ({ url: targets[s], tls: tlsA, path: ENC1 }), keys);
    done(phase);
  }

  if (PHASES.has('c')) {
    const { now, keys } = await allowance('c');
    const phase: Phase = { id: 'c', title: 'POST enc_keys {number:128,size:256}', keysPerRequest: 128, rpsMethod: AUTOCANNON_RPS, notes: [] };
    console.log(`\n[c] pool ${now.toLocaleString('en-US')} keys; this phase may use ${keys.toLocaleString('en-US')}`);
    await twoServers(
      phase,
      (s) => ({ url: targets[s], tls: tlsA, method: 'POST', path: '/api/v1/keys/SAE_B/enc_keys', body: { number: 128, size: 256 } }),
      keys,
    );
    done(phase);
  }

  if (PHASES.has('d')) {
    const { keys } = await allowance('d');
    const phase: Phase = { id: 'd', title: 'GET dec_keys?key_ID=… (each ID once, as SAE_B)', keysPerRequest: 1, rpsMethod: AUTOCANNON_RPS, notes: [] };
    const ids = await fetchKeyIds(kmeUrl, A, keys);
    let next = 0;
    let exhausted = 0;
    const nextId = () => {
      if (next < ids.length) return ids[next++]!;
      exhausted++; // should not happen: the KME run is capped at ids.length requests
      return randomUUID();
    };
    const path = (id: string) => `/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`;
    await twoServers(
      phase,
      (s) => ({ url: targets[s], tls: tlsB, path: path(randomUUID()), nextPath: () => path(s === 'kme' ? nextId() : randomUUID()) }),
      ids.length,
    );
    phase.notes.push(`${ids.length.toLocaleString('en-US')} key_IDs fetched beforehand, ${next.toLocaleString('en-US')} used` +
      (exhausted ? `, ${exhausted} requests had to use an unknown ID (supply ran out)` : ''));
    if (phase.kme?.non2xx) phase.notes.push('non-2xx on dec_keys: a 400 here means a key_ID was refused on its first use — look at it');
    done(phase);
  }

  if (PHASES.has('e')) {
    const { keys } = await allowance('e');
    const phase: Phase = {
      id: 'e',
      title: `GET enc_keys?number=1 at a fixed ${FIXED_RATE} req/s (latency)`,
      keysPerRequest: 1,
      rpsMethod: 'median of one-second samples (open-loop pacer, ≤32 keep-alive connections; latency from scheduled send time)',
      notes: [],
    };
    if (keys < FIXED_RATE * (WARMUP + SECONDS)) phase.notes.push(`pool budget ${keys} keys is below what this phase needs; expect 503s`);
    for (const server of ['kme', 'reference'] as const) {
      const spec = { url: targets[server], tls: tlsA, path: ENC1, rate: FIXED_RATE };
      await paced({ ...spec, durationS: WARMUP });
      phase[server] = await paced({ ...spec, durationS: SECONDS });
    }
    done(phase);
  }

  if (PHASES.has('f')) {
    const { keys } = await allowance('f');
    for (const mode of ['full', 'resumed'] as const) {
      const phase: Phase = {
        id: mode === 'full' ? 'f1' : 'f2',
        title: `GET enc_keys?number=1, a new mutual-TLS connection per request (${mode === 'full' ? 'full handshake' : 'TLS session resumed'})`,
        keysPerRequest: 1,
        rpsMethod: `median of one-second samples (${FRESH_WORKERS} concurrent client loops)`,
        notes: [],
      };
      for (const server of ['kme', 'reference'] as const) {
        // The KME may use half the phase's budget per mode, spread over warm-up and measurement.
        const perSecond = server === 'kme' ? Math.floor(keys / 2 / (WARMUP + SECONDS)) : Infinity;
        const spec = { url: targets[server], tls: tlsA, path: ENC1, workers: FRESH_WORKERS, mode };
        await freshConnections({ ...spec, durationS: WARMUP, maxRequests: perSecond * WARMUP });
        phase[server] = await freshConnections({ ...spec, durationS: SECONDS, maxRequests: perSecond * SECONDS });
      }
      if (mode === 'resumed' && phase.kme && phase.kme.resumed! < phase.kme.requests * 0.9) {
        phase.notes.push(`only ${phase.kme.resumed} of ${phase.kme.requests} KME handshakes resumed a session`);
      }
      done(phase);
    }
  }

  // ── Results.
  await kme.stop(); // before reading its log and profile: both are complete only once it has exited
  const profile = CPU_PROF ? readProfile(profDir) : undefined;
  const kmeLog = serverLog(kmeChildren);
  const refLog = serverLog([ref.child], /^REF_LISTENING /); // the ready line is expected
  const targetsMet = checkTargets(phases);
  printTargets(targetsMet);
  console.log(`\n── KME log (warn and above): ${kmeLog.count} line(s)`);
  for (const l of kmeLog.sample) console.log(`   ${l}`);
  if (refLog.count) console.log(`── reference server log: ${refLog.count} line(s)\n   ${refLog.sample.join('\n   ')}`);
  if (profile) printProfile(profile);

  const out = process.env.BENCH_OUT ?? join(REPO, 'bench', 'results', 'latest.json');
  writeJson(out, {
    date: new Date().toISOString(),
    machine: machine(),
    code,
    settings: {
      seconds: SECONDS,
      warmup_seconds: WARMUP,
      connections: 32,
      fixed_rate: FIXED_RATE,
      fresh_connection_workers: FRESH_WORKERS,
      key_size: 256,
      max_key_count: MAX_KEY_COUNT,
      fill_link_bits_per_second: FILL_BPS,
      measure_link_bits_per_second: LINK_BPS,
      kme_db_pool_size: DB_POOL ?? 'KME default',
      cpu_profile: CPU_PROF,
      postgres_autovacuum: db.autovacuum,
      analyzed_after_fill: db.analyzed,
    },
    fill,
    phases: phases.map((p) => ({
      ...p,
      kme_keys_per_second: p.kme && p.keysPerRequest ? p.kme.rpsMedian * p.keysPerRequest : undefined,
      ratio_kme_to_reference: p.kme && p.reference?.rpsMedian ? p.kme.rpsMedian / p.reference.rpsMedian : undefined,
    })),
    targets: targetsMet,
    kme_log: kmeLog,
    reference_log: refLog,
    cpu_profile: profile,
    total_seconds: Math.round((Date.now() - began) / 1000),
  });
  console.log(`\nresults written to ${out} (${Math.round((Date.now() - began) / 1000)} s in all)`);

  function done(p: Phase) {
    phases.push(p);
    printPhase(p);
  }
}

/** Polls status until `target` keys are stored or the time budget is spent; then the phases size themselves down. */
async function fillPool(stored: () => Promise<number>, target: number, budgetS: number) {
  const start = Date.now();
  let last = { t: start, n: await stored() };
  let n = last.n;
  let lastPrint = 0;
  console.log(`filling the key pool to ${target.toLocaleString('en-US')} keys (at most ${budgetS} s)…`);
  while (n < target && Date.now() - start < budgetS * 1000) {
    await new Promise((r) => setTimeout(r, 500));
    n = await stored();
    if (Date.now() - lastPrint >= 3000) {
      const rate = ((n - last.n) * 1000) / Math.max(Date.now() - last.t, 1);
      console.log(`  pool ${n.toLocaleString('en-US')} keys (+${Math.round(rate).toLocaleString('en-US')}/s)`);
      last = { t: Date.now(), n };
      lastPrint = Date.now();
    }
  }
  const seconds = (Date.now() - start) / 1000;
  const rate = Math.round(n / seconds);
  if (n < target) {
    console.log(`  filling is slower than planned (${rate.toLocaleString('en-US')} keys/s): stopping at ${n.toLocaleString('en-US')} keys; ` +
      'the phases cap their requests to what the pool holds (phase c first)');
  } else {
    console.log(`  pool filled: ${n.toLocaleString('en-US')} keys in ${seconds.toFixed(1)} s (${rate.toLocaleString('en-US')} keys/s)`);
  }
  return { target, stored: n, seconds, keys_per_second: rate };
}

/**
 * key_IDs for the dec_keys phase: enc_keys as SAE_A for SAE_B, 128 per request, 8 requests at a time.
 * Bounded in time too: a slow KME gets a shorter dec_keys run rather than a longer benchmark.
 */
async function fetchKeyIds(url: string, master: Identity, keys: number, maxSeconds = 20): Promise<string[]> {
  const client = new JsonClient(url, master);
  const ids: string[] = [];
  const start = Date.now();
  try {
    let remaining = Math.floor(keys / 128);
    const worker = async () => {
      while (remaining-- > 0 && Date.now() - start < maxSeconds * 1000) {
        const r = await client.call('POST', '/api/v1/keys/SAE_B/enc_keys', { number: 128, size: 256 });
        if (r.status !== 200) throw new Error(`fetching key_IDs: enc_keys answered ${r.status}: ${JSON.stringify(r.body)}`);
        for (const k of r.body.keys as Array<{ key_ID: string }>) ids.push(k.key_ID);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
  } finally {
    client.close();
  }
  console.log(`\n[d] fetched ${ids.length.toLocaleString('en-US')} key_IDs for SAE_B in ${((Date.now() - start) / 1000).toFixed(1)} s`);
  return ids;
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

/** Lines a server printed at warn level or above (pino JSON: level ≥ 40), or anything that is not pino JSON. */
function serverLog(children: Child[], expected?: RegExp) {
  const lines = children.flatMap((c) => c.lines).filter((l) => l.trim() !== '' && !expected?.test(l));
  const notable = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { level?: number }).level! >= 40;
    } catch {
      return true;
    }
  });
  const unique = [...new Set(notable.map((l) => l.slice(0, 400)))];
  return { count: notable.length, sample: unique.slice(0, 15) };
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
