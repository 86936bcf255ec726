// Turns a pool over: delivers a number of keys with 128-key enc_keys requests from concurrent loops, as fast as the
// KME answers, while its link refills the pool. Not a measurement of latency (phase c is that): what counts is
// that the keys really left the pool, so each 2xx body's keys are counted, and a 503 (pool empty: ingest is
// behind) waits briefly for the link instead of hammering the KME.
import { JsonClient, type Identity } from './client.js';

export interface DeliverResult {
  keys_delivered: number;
  requests: number;
  /** Non-2xx answers by status (503: the pool was empty for a moment). */
  refused: Record<string, number>;
  errors: number;
  seconds: number;
  keys_per_second: number;
  /** Why the target was not reached: the time budget ran out, or nothing was delivered for STALL_SECONDS. */
  stopped_early?: 'time budget' | 'stalled';
}

/** No key delivered for this long (every request refused or failing): stop rather than spin out the budget. */
const STALL_SECONDS = 60;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function deliverKeys(
  url: string,
  master: Identity,
  opts: { keys: number; maxSeconds: number; workers?: number; progress?: (delivered: number, seconds: number) => Promise<void> | void },
): Promise<DeliverResult> {
  const client = new JsonClient(url, master);
  const start = performance.now();
  const elapsed = () => (performance.now() - start) / 1000;
  const out = { delivered: 0, requests: 0, errors: 0, refused: {} as Record<string, number> };
  let claimed = 0; // keys asked for so far: the loops stop asking once the target is covered
  let lastDelivery = 0;
  const stalled = () => elapsed() - lastDelivery > STALL_SECONDS;
  const worker = async () => {
    while (claimed < opts.keys && elapsed() < opts.maxSeconds && !stalled()) {
      claimed += 128;
      const r = await client.call('POST', '/api/v1/keys/SAE_B/enc_keys', { number: 128, size: 256 }).catch(() => undefined);
      out.requests++;
      if (r?.status === 200) {
        out.delivered += (r.body.keys as unknown[]).length;
        lastDelivery = elapsed();
        continue;
      }
      claimed -= 128; // not delivered: still to do
      if (r) out.refused[r.status] = (out.refused[r.status] ?? 0) + 1;
      else out.errors++;
      await sleep(r?.status === 503 ? 20 : 200);
    }
  };
  let reporter: NodeJS.Timeout | undefined;
  if (opts.progress) {
    reporter = setInterval(() => void opts.progress!(out.delivered, elapsed()), 15_000);
  }
  try {
    await Promise.all(Array.from({ length: opts.workers ?? 16 }, worker));
  } finally {
    clearInterval(reporter);
    client.close();
  }
  const seconds = elapsed();
  return {
    keys_delivered: out.delivered,
    requests: out.requests,
    refused: out.refused,
    errors: out.errors,
    seconds: Math.round(seconds * 10) / 10,
    keys_per_second: Math.round(out.delivered / seconds),
    ...(out.delivered < opts.keys ? { stopped_early: stalled() ? ('stalled' as const) : ('time budget' as const) } : {}),
  };
}
