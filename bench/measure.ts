// Steps every measured part shares (single KME and network): filling a pool, sizing a phase to what the pool holds,
// a warm-up then a measurement against the KME and the reference in turn, and fetching key_IDs for dec_keys.
import { randomUUID } from 'node:crypto';
import { JsonClient, type Identity } from './client.js';
import { startCpuSplit } from './cpu-split.js';
import { cannon, type CannonSpec, type Tls } from './load.js';
import type { Phase } from './report.js';
import { PHASES, SECONDS, WARMUP } from './settings.js';

export type Server = 'kme' | 'reference';

/**
 * Keys a phase may use: what is stored minus what later selected phases are planned to need (`plan`: keys per
 * phase id, warm-up included; a phase without a plan gets whatever the others leave).
 */
export function allowanceFor(plan: Record<string, number>, stored: () => Promise<number>) {
  return async (id: string) => {
    const now = await stored();
    const later = [...PHASES].filter((p) => p > id && plan[p]).reduce((n, p) => n + plan[p]!, 0);
    const room = Math.max(0, now - later);
    return { now, keys: plan[id] ? Math.min(plan[id]!, room) : room };
  };
}

/** Warm-up then measurement, against each server in turn; the KME's run may be capped by the pool. */
export async function twoServers(phase: Phase, spec: (server: Server) => Omit<CannonSpec, 'durationS'>, keysCap?: number): Promise<void> {
  for (const server of ['kme', 'reference'] as const) await measureInto(phase, server, spec(server), server === 'kme' ? keysCap : undefined);
}

/** Where a phase keeps a run: the KME, the reference, or (phase r) two replicas of the KME behind the same clients. */
export type Slot = Server | 'replicas';

/**
 * Warm-up then measurement of one server, kept as phase[slot]; with `keysCap` (the pool's budget for this run) the
 * run stops after that many keys, or is skipped when the budget is too small to measure anything.
 */
export async function measureInto(phase: Phase, slot: Slot, s: Omit<CannonSpec, 'durationS'>, keysCap?: number): Promise<void> {
  const who = slot === 'replicas' ? 'two-replica' : slot === 'kme' ? 'KME' : 'reference';
  const cap = keysCap !== undefined ? Math.floor(keysCap / Math.max(phase.keysPerRequest, 1)) : undefined;
  if (cap !== undefined && cap < 10 * 32) {
    phase.notes.push(`${who} run skipped: the pool budget (${keysCap} keys) is too small for this phase`);
    return;
  }
  const share = (seconds: number) => (cap === undefined ? undefined : Math.floor((cap * seconds) / (WARMUP + SECONDS)));
  await cannon({ ...s, durationS: WARMUP, maxRequests: share(WARMUP) });
  const cpuSplit = startCpuSplit();
  const r = await cannon({ ...s, durationS: SECONDS, maxRequests: share(SECONDS) });
  r.cpu = cpuSplit(r.requests);
  phase[slot] = r;
  if (cap !== undefined && r.durationS < SECONDS - 0.5) {
    phase.notes.push(`${who} run stopped after ${r.requests} requests (${r.durationS} s): key pool budget`);
  }
}

/** Polls `stored` until `target` keys are there or the time budget is spent; then the phases size themselves down. */
export async function fillPool(stored: () => Promise<number>, target: number, budgetS: number, what = 'the key pool') {
  const start = Date.now();
  let last = { t: start, n: await stored() };
  let n = last.n;
  const first = n;
  let lastPrint = 0;
  if (n >= target) {
    console.log(`${what} holds ${n.toLocaleString('en-US')} keys already (target ${target.toLocaleString('en-US')})`);
    return { target, stored: n, seconds: 0, keys_per_second: 0 };
  }
  console.log(`filling ${what} to ${target.toLocaleString('en-US')} keys (at most ${budgetS} s)…`);
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
  // What came in while we watched: a pool that was not empty at the start (a refill) must not count as speed.
  const rate = Math.round((n - first) / seconds);
  if (n < target) {
    console.log(`  filling is slower than planned (${rate.toLocaleString('en-US')} keys/s): stopping at ${n.toLocaleString('en-US')} keys; ` +
      'the phases cap their requests to what the pool holds (the 128-key phase first)');
  } else {
    console.log(`  pool filled: ${n.toLocaleString('en-US')} keys in ${seconds.toFixed(1)} s (${rate.toLocaleString('en-US')} keys/s)`);
  }
  return { target, stored: n, seconds, keys_per_second: rate };
}

/**
 * key_IDs for a dec_keys phase: enc_keys as `master` for `slave`, 128 per request, 8 requests at a time.
 * Bounded in time too: a slow KME gets a shorter dec_keys run rather than a longer benchmark.
 */
export async function fetchKeyIds(
  url: string,
  master: Identity,
  keys: number,
  opts: {
    slave: string;
    label: string;
    maxSeconds?: number;
    /** Given: a refused request ends the fetching (noted here) instead of the benchmark. */
    notes?: string[];
  },
): Promise<string[]> {
  const client = new JsonClient(url, master);
  const ids: string[] = [];
  const start = Date.now();
  const maxSeconds = opts.maxSeconds ?? 20;
  try {
    let remaining = Math.floor(keys / 128);
    let stopped = false;
    const worker = async () => {
      while (!stopped && remaining-- > 0 && Date.now() - start < maxSeconds * 1000) {
        const r = await client.call('POST', `/api/v1/keys/${opts.slave}/enc_keys`, { number: 128, size: 256 });
        if (r.status !== 200) {
          const why = `fetching key_IDs: enc_keys answered ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`;
          if (!opts.notes) throw new Error(why);
          if (!stopped) opts.notes.push(`${why} — stopped fetching at ${ids.length.toLocaleString('en-US')} key_IDs`);
          stopped = true; // the other workers stop too, and do not note it again
          return;
        }
        for (const k of r.body.keys as Array<{ key_ID: string }>) ids.push(k.key_ID);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
  } finally {
    client.close();
  }
  console.log(`\n[${opts.label}] fetched ${ids.length.toLocaleString('en-US')} key_IDs for ${opts.slave} in ${((Date.now() - start) / 1000).toFixed(1)} s`);
  return ids;
}

/**
 * A dec_keys run as `tls`'s SAE for keys `master` got: the KME gets each fetched key_ID once (its run is capped at
 * their number), the reference fresh UUIDs. Notes how many IDs were used, and what a non-2xx answer means here.
 * `urls` names the servers, run in its order; the KME's runs (every one but the reference: phase r has two) share
 * the IDs, each capped at an equal part.
 */
export async function decKeysRun(
  phase: Phase,
  ids: string[],
  opts: { urls: Partial<Record<Slot, CannonSpec['url']>>; tls: Tls; master: string },
): Promise<void> {
  let next = 0;
  let exhausted = 0;
  const nextId = () => {
    if (next < ids.length) return ids[next++]!;
    exhausted++; // should not happen: the KME runs are capped at ids.length requests together
    return randomUUID();
  };
  const path = (id: string) => `/api/v1/keys/${opts.master}/dec_keys?key_ID=${id}`;
  const slots = Object.keys(opts.urls) as Slot[];
  const kmeRuns = slots.filter((s) => s !== 'reference').length;
  for (const s of slots) {
    const spec = { url: opts.urls[s]!, tls: opts.tls, path: path(randomUUID()), nextPath: () => path(s === 'reference' ? randomUUID() : nextId()) };
    await measureInto(phase, s, spec, s === 'reference' ? undefined : Math.floor(ids.length / kmeRuns));
  }
  phase.notes.push(`${ids.length.toLocaleString('en-US')} key_IDs fetched beforehand, ${next.toLocaleString('en-US')} used` +
    (exhausted ? `, ${exhausted} requests had to use an unknown ID (supply ran out)` : ''));
  if (phase.kme?.non2xx || phase.replicas?.non2xx) phase.notes.push('non-2xx on dec_keys: a 400 here means a key_ID was refused on its first use — look at it');
}
