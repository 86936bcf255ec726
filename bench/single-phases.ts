// Phases a–f: one KME (KME_B, SAE_A and SAE_B on its loopback link), each against the reference server.
import type { Identity, tlsFor } from './client.js';
import { freshConnections, pacedAfterWarmUp } from './load.js';
import { allowanceFor, decKeysRun, fetchKeyIds, twoServers, type Server } from './measure.js';
import type { Phase } from './report.js';
import { AUTOCANNON_RPS, ENC1, FIXED_RATE, FRESH_WORKERS, PHASES, SECONDS, WARMUP } from './settings.js';
import { enter } from './timeline.js';

// Keys each phase may take from the pool (warm-up included); phase c gets whatever the others leave. Phase k runs
// later on the same pool: its paced load without ingest draws FIXED_RATE keys a second before its ingest refills.
export const SINGLE_PLAN: Record<string, number> = { b: 40_000, d: 40_000, e: 7_000, f: 30_000, k: 2 * FIXED_RATE * (WARMUP + SECONDS) + 5_000 };

export interface SingleTarget {
  urls: Record<Server, string>;
  /** SAE_A (the master) and SAE_B (the slave), both at this KME. */
  A: Identity;
  tlsA: ReturnType<typeof tlsFor>;
  tlsB: ReturnType<typeof tlsFor>;
  /** Keys the KME could hand out to SAE_A for SAE_B now. */
  stored: () => Promise<number>;
  /** Runs around each selected phase (e.g. to measure the database before and after it); by default just runs it. */
  around?: (id: string, run: () => Promise<void>) => Promise<void>;
}

/** Runs the selected phases of a–f in order; `done` records and prints each as it ends. */
export async function singlePhases(t: SingleTarget, done: (p: Phase) => void): Promise<void> {
  const { urls, tlsA, tlsB } = t;
  const allowance = allowanceFor(SINGLE_PLAN, t.stored);
  // Each phase is a window of the timeline (RSS samples and CPU profiles are told apart by it).
  const step = async (id: string, run: () => Promise<void>) => {
    if (!PHASES.has(id)) return;
    enter(id);
    await (t.around ? t.around(id, run) : run());
  };

  await step('a', async () => {
    const phase: Phase = { id: 'a', title: 'GET status', keysPerRequest: 0, rpsMethod: AUTOCANNON_RPS, notes: [] };
    await twoServers(phase, (s) => ({ url: urls[s], tls: tlsA, path: '/api/v1/keys/SAE_B/status' }));
    done(phase);
  });

  await step('b', async () => {
    const { now, keys } = await allowance('b');
    const phase: Phase = { id: 'b', title: 'GET enc_keys?number=1 (256 bits)', keysPerRequest: 1, rpsMethod: AUTOCANNON_RPS, notes: [] };
    console.log(`\n[b] pool ${now.toLocaleString('en-US')} keys; this phase may use ${keys.toLocaleString('en-US')}`);
    await twoServers(phase, (s) => ({ url: urls[s], tls: tlsA, path: ENC1 }), keys);
    done(phase);
  });

  await step('c', async () => {
    const { now, keys } = await allowance('c');
    const phase: Phase = { id: 'c', title: 'POST enc_keys {number:128,size:256}', keysPerRequest: 128, rpsMethod: AUTOCANNON_RPS, notes: [] };
    console.log(`\n[c] pool ${now.toLocaleString('en-US')} keys; this phase may use ${keys.toLocaleString('en-US')}`);
    await twoServers(
      phase,
      (s) => ({ url: urls[s], tls: tlsA, method: 'POST', path: '/api/v1/keys/SAE_B/enc_keys', body: { number: 128, size: 256 } }),
      keys,
    );
    done(phase);
  });

  await step('d', async () => {
    const { keys } = await allowance('d');
    const phase: Phase = { id: 'd', title: 'GET dec_keys?key_ID=… (each ID once, as SAE_B)', keysPerRequest: 1, rpsMethod: AUTOCANNON_RPS, notes: [] };
    const ids = await fetchKeyIds(urls.kme, t.A, keys, { slave: 'SAE_B', label: 'd' });
    await decKeysRun(phase, ids, { urls, tls: tlsB, master: 'SAE_A' });
    done(phase);
  });

  await step('e', async () => {
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
      phase[server] = await pacedAfterWarmUp({ url: urls[server], tls: tlsA, path: ENC1, rate: FIXED_RATE, warmupS: WARMUP, durationS: SECONDS });
    }
    done(phase);
  });

  await step('f', async () => {
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
        const spec = { url: urls[server], tls: tlsA, path: ENC1, workers: FRESH_WORKERS, mode };
        await freshConnections({ ...spec, durationS: WARMUP, maxRequests: perSecond * WARMUP });
        phase[server] = await freshConnections({ ...spec, durationS: SECONDS, maxRequests: perSecond * SECONDS });
      }
      if (mode === 'resumed' && phase.kme && phase.kme.resumed! < phase.kme.requests * 0.9) {
        phase.notes.push(`only ${phase.kme.resumed} of ${phase.kme.requests} KME handshakes resumed a session`);
      }
      done(phase);
    }
  });
}
