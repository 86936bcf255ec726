// Phase s: what sealing the custody log costs enc_keys, and how far behind it runs under load. Phase b's request
// (one 256-bit key, keep-alive) on the single KME's pool, against the KME restarted four times in turn:
//   off — audit.seal_every_ms 60 000: no seal falls inside a measurement (the log's numbering trigger and its
//         events are as always: they are the custody itself, not sealing);
//   on  — the default, a seal every 500 ms.
// Each three times, in the order on, off, off, on, on, off, so that a drift of the shared machine (or of the pool,
// which the runs draw down) weighs on both alike; the cost is the median "on" run over the median "off" one. (Runs
// of one mode on this VM differ by up to 30% from one to the next, and a later run is often the slowest: fewer runs
// measured the noise, not the sealer. BENCH_SEAL_ORDER, e.g. "on,off", changes the sequence.) During the "on" runs the lag is sampled every 200 ms:
// the age of the oldest committed event that no checkpoint covers yet (0 when every event is sealed).
import pg from 'pg';
import type { tlsFor } from './client.js';
import type { KmeHost } from './kme-host.js';
import { startCpuSplit, describeCpuSplit } from './cpu-split.js';
import { cannon, type PhaseResult } from './load.js';
import type { Phase } from './report.js';
import { AUTOCANNON_RPS, ENC1, LINK_BPS, MAX_KEY_COUNT, SECONDS, WARMUP } from './settings.js';

export interface SealingResult {
  rps_off: number[];
  rps_on: number[];
  /** median(on) / median(off): the goal is ≥ 0.9 (sealing costs at most 10%). */
  ratio: number;
  /** The largest lag sampled while sealing under load, and its median (goal: ≤ 1000 ms). */
  lag_max_ms: number;
  lag_median_ms: number;
  lag_samples: number;
  checkpoints_during_on: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** Samples the sealer's lag every 200 ms until stopped. */
function sampleLag(databaseUrl: string): { stop: () => Promise<number[]> } {
  const client = new pg.Client({ connectionString: databaseUrl });
  const samples: number[] = [];
  let running = true;
  const loop = (async () => {
    await client.connect();
    while (running) {
      const { rows } = await client.query<{ ms: number | null }>(
        `SELECT (extract(epoch FROM clock_timestamp() - min(at)) * 1000)::float8 AS ms FROM audit_event
          WHERE seq > COALESCE((SELECT max(tree_size) FROM audit_seal), 0)`,
      );
      samples.push(Math.max(0, rows[0]?.ms ?? 0));
      await new Promise((r) => setTimeout(r, 200));
    }
    await client.end();
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return samples;
    },
  };
}

/** Waits (at most 60 s) until every committed event is sealed. */
async function untilSealed(databaseUrl: string): Promise<void> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
      const { rows } = await c.query<{ behind: boolean }>(
        `SELECT COALESCE((SELECT max(seq) FROM audit_event), 0) > COALESCE((SELECT max(tree_size) FROM audit_seal), 0) AS behind`,
      );
      if (!rows[0]!.behind) return;
    }
  } finally {
    await c.end();
  }
}

async function seals(databaseUrl: string): Promise<number> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    return (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_seal')).rows[0]!.n;
  } finally {
    await c.end();
  }
}

export async function sealingPhase(host: KmeHost, tlsA: ReturnType<typeof tlsFor>, done: (p: Phase) => void): Promise<SealingResult> {
  const runs: Record<'off' | 'on', PhaseResult[]> = { off: [], on: [] };
  const lags: number[] = [];
  let checkpoints = 0;
  for (const mode of (process.env.BENCH_SEAL_ORDER?.split(',') ?? ['on', 'off', 'off', 'on', 'on', 'off']) as Array<'on' | 'off'>) {
    await host.start({ rateBps: LINK_BPS, maxKeyCount: MAX_KEY_COUNT, sealEveryMs: mode === 'on' ? 500 : 60_000 }, `s ${mode}`);
    // A sealing KME first catches up with what the idle runs left unsealed (tens of thousands of events): that is
    // sealing's cost too, but not its steady state under load, which is what is measured here.
    if (mode === 'on') await untilSealed(host.databaseUrl);
    const spec = { url: host.url, tls: tlsA, path: ENC1 };
    await cannon({ ...spec, durationS: WARMUP });
    const before = mode === 'on' ? await seals(host.databaseUrl) : 0;
    const lag = mode === 'on' ? sampleLag(host.databaseUrl) : undefined;
    const cpuSplit = startCpuSplit();
    const run = await cannon({ ...spec, durationS: SECONDS });
    run.cpu = cpuSplit(run.requests);
    runs[mode].push(run);
    if (lag) lags.push(...(await lag.stop()));
    if (mode === 'on') checkpoints += (await seals(host.databaseUrl)) - before;
  }
  await host.stop();
  const rpsOff = runs.off.map((r) => r.rpsMedian);
  const rpsOn = runs.on.map((r) => r.rpsMedian);
  const result: SealingResult = {
    rps_off: rpsOff,
    rps_on: rpsOn,
    ratio: median(rpsOn) / median(rpsOff),
    lag_max_ms: Math.round(Math.max(0, ...lags)),
    lag_median_ms: Math.round(median(lags)),
    lag_samples: lags.length,
    checkpoints_during_on: checkpoints,
  };
  const phase: Phase = {
    id: 's',
    title: 'GET enc_keys?number=1 while the custody log is sealed every 500 ms (the table: the last such run)',
    keysPerRequest: 1,
    rpsMethod: AUTOCANNON_RPS,
    kme: runs.on.at(-1)!,
    notes: [
      ...runs.off.map((r, i) => `sealer idle, run ${i + 1}: ${r.cpu ? describeCpuSplit(r.cpu) : 'no CPU figures'}`),
      ...runs.on.map((r, i) => `sealing, run ${i + 1}: ${r.cpu ? describeCpuSplit(r.cpu) : 'no CPU figures'}`),
      `req/s sealer idle ${rpsOff.map((r) => Math.round(r)).join(', ')}; sealing ${rpsOn.map((r) => Math.round(r)).join(', ')}: ` +
        `sealing keeps ${(result.ratio * 100).toFixed(1)}% of the throughput (goal ≥ 90%)`,
      `lag behind the newest event while sealing under load: max ${result.lag_max_ms} ms, median ${result.lag_median_ms} ms ` +
        `over ${lags.length} samples (goal ≤ 1000 ms); ${checkpoints} checkpoints signed`,
    ],
  };
  done(phase);
  return result;
}
