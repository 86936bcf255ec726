// The three ways the benchmark generates load:
// - autocannon, closed loop over keep-alive connections (throughput phases);
// - an open-loop pacer at a fixed request rate, for latency (autocannon's own rate limiting sends each connection's
//   per-second quota in a burst at the top of the second, and its coordinated-omission correction assumes a 1 ms
//   interval whatever the rate, which inflates percentiles; so latency is measured here from each request's
//   *scheduled* send time, which counts queueing delay honestly);
// - fresh-connection workers, one mutual-TLS handshake per request, as every public ETSI 014 client does.
import { appendFileSync } from 'node:fs';
import autocannon, { type Request } from 'autocannon';
import { setMaxListeners } from 'node:events';
import { Agent, request, type RequestOptions } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { tlsFor } from './client.js';
import type { CpuSplit } from './cpu-split.js';
import { TRACE_FILE } from './settings.js';

export type Tls = ReturnType<typeof tlsFor>;

export interface PhaseResult {
  /** Completed requests per second: the median of one-second samples, and the plain average. */
  rpsMedian: number;
  rpsMean: number;
  samples: number;
  durationS: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  statusCodes: Record<string, number>;
  errors: number;
  /** Requests still unanswered when the run's drain deadline passed (custom generators only). */
  unanswered?: number;
  /** Fresh-connection phases: how many handshakes resumed a TLS session. */
  resumed?: number;
  /** Where the machine's CPU went per request during the run (cpu-split.ts). */
  cpu?: CpuSplit;
}

export interface CannonSpec {
  /** Several (replicas of one KME): the connections alternate between them, connection i to url[i % url.length]. */
  url: string | string[];
  tls: Tls;
  method?: 'GET' | 'POST';
  path: string;
  body?: unknown;
  connections?: number;
  durationS: number;
  /** Stops early after this many requests, so a phase cannot drain the key pool into 503s. */
  maxRequests?: number;
  /** Rewrites each request's path (dec_keys: the next unused key_ID). */
  nextPath?: () => string;
}

export async function cannon(spec: CannonSpec): Promise<PhaseResult> {
  const connections = spec.connections ?? 32;
  const req: Request = {
    method: spec.method ?? 'GET',
    path: spec.path,
    ...(spec.body === undefined ? {} : { body: JSON.stringify(spec.body), headers: { 'content-type': 'application/json' } }),
    ...(spec.nextPath ? { setupRequest: (r: Request) => ({ ...r, path: spec.nextPath!() }) } : {}),
  };
  const result = await autocannon({
    url: spec.url,
    connections,
    duration: spec.durationS,
    ...(spec.maxRequests ? { maxOverallRequests: Math.max(spec.maxRequests, connections) } : {}),
    requests: [req],
    tlsOptions: spec.tls, // client certificate for mutual TLS; autocannon itself skips server verification
    timeout: 20,
  });
  const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats).map(([k, v]) => [k, v.count]));
  const total = Object.values(statusCodes).reduce((a, b) => a + b, 0);
  return {
    rpsMedian: result.requests.p50,
    rpsMean: result.requests.average,
    samples: result.samples,
    durationS: result.duration,
    requests: total,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    statusCodes,
    errors: result.errors,
  };
}

/** Records request outcomes and completion times; summarises them like autocannon does. */
class Recorder {
  private readonly latencies: number[] = [];
  private readonly completions: number[] = [];
  readonly statusCodes: Record<string, number> = {};
  errors = 0;
  unanswered = 0;
  resumed: number | undefined;
  constructor(private readonly start: number) {}

  done(status: number, latencyMs: number): void {
    this.statusCodes[status] = (this.statusCodes[status] ?? 0) + 1;
    this.latencies.push(latencyMs);
    this.completions.push(performance.now());
  }

  /** A request cut off at the deadline: its latency is at least `lowerBoundMs`, so it still weighs on the p99. */
  cutOff(lowerBoundMs: number): void {
    this.unanswered++;
    this.latencies.push(lowerBoundMs);
  }

  summary(end: number): PhaseResult {
    const seconds = Math.floor((end - this.start) / 1000);
    const perSecond = new Array<number>(Math.max(seconds, 1)).fill(0);
    for (const t of this.completions) {
      const s = Math.floor((t - this.start) / 1000);
      if (s < perSecond.length) perSecond[s]!++;
    }
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const requests = this.completions.length;
    const inTime = this.completions.filter((t) => t <= end).length; // answers that came while the run lasted
    return {
      rpsMedian: percentile([...perSecond].sort((a, b) => a - b), 50),
      rpsMean: inTime / ((end - this.start) / 1000),
      samples: perSecond.length,
      durationS: (end - this.start) / 1000,
      requests,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      non2xx: Object.entries(this.statusCodes).reduce((n, [code, c]) => (code.startsWith('2') ? n : n + c), 0),
      statusCodes: this.statusCodes,
      errors: this.errors,
      unanswered: this.unanswered,
      ...(this.resumed === undefined ? {} : { resumed: this.resumed }),
    };
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Requests still running this long after a run's end are aborted: a stalled server cannot stretch the benchmark. */
const DRAIN_MS = 5_000;

/**
 * One request; resolves with the status once the whole body has arrived, 0 on a network error, or 'aborted'
 * when `signal` fired first.
 */
function once(url: string, path: string, opts: RequestOptions, signal: AbortSignal, onSocket?: (s: TLSSocket) => void): Promise<number | 'aborted'> {
  return new Promise((resolve) => {
    const fail = () => resolve(signal.aborted ? 'aborted' : 0);
    const req = request(new URL(path, url), { ...opts, signal }, (res) => {
      if (onSocket) onSocket(res.socket as TLSSocket);
      res.on('data', () => undefined);
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', fail);
    });
    req.on('error', fail);
    req.end();
  });
}

/** One controller aborts every request of a run; each in-flight request listens on it, hence no listener limit. */
function controller(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for `work`, but at most until `deadline` (a performance.now() time); then aborts what is left. */
async function drain(work: Promise<unknown>, deadline: number, abort: AbortController): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - performance.now()))));
  await Promise.race([work, late]);
  clearTimeout(timer);
  abort.abort();
  await work; // every request settles promptly once aborted
}

export interface PacedSpec {
  url: string;
  tls: Tls;
  path: string;
  rate: number;
  /** At most this many keep-alive connections (32). */
  sockets?: number;
}

/**
 * The paced load of the latency phases: `warmupS` seconds, then `during` (e.g. to open a measuring window), then
 * `durationS` measured seconds on the same keep-alive connections, so that the measured window holds no handshakes
 * (a latency phase measures keep-alive requests; phase f measures handshakes).
 */
export async function pacedAfterWarmUp(spec: PacedSpec & { warmupS: number; durationS: number; during?: () => Promise<void> }): Promise<PhaseResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: spec.sockets ?? 32, ...spec.tls });
  try {
    await paced(spec, agent, spec.warmupS);
    await spec.during?.();
    return await paced(spec, agent, spec.durationS);
  } finally {
    agent.destroy();
  }
}

/**
 * How many requests of an open-loop schedule at `rate` a second are due `elapsedMs` after its start: request n is due
 * at n × 1000 / rate ms, the first at once. (Until 2026-12-01 the count left out the request due last, so each one
 * went out, and had its latency counted from its due time, one interval late: 2 ms at 500 req/s, for the KME and the
 * reference server alike.)
 */
export function dueBy(elapsedMs: number, rate: number): number {
  return Math.floor((elapsedMs * rate) / 1000) + 1;
}

/** Open loop: `rate` requests per second on schedule, over the agent's keep-alive connections. */
async function paced(spec: PacedSpec, agent: Agent, durationS: number): Promise<PhaseResult> {
  const abort = controller();
  const start = performance.now();
  const end = start + durationS * 1000;
  const rec = new Recorder(start);
  const inFlight: Promise<void>[] = [];
  // Each request's due time (epoch ms) and latency, to see when the slow ones came (BENCH_TRACE).
  const trace = TRACE_FILE ? ([] as string[]) : undefined;
  let sent = 0;
  while (performance.now() < end) {
    const due = dueBy(performance.now() - start, spec.rate);
    for (; sent < due; sent++) {
      const scheduled = start + (sent * 1000) / spec.rate; // latency counts from here, not from when it got sent
      inFlight.push(
        once(spec.url, spec.path, { agent }, abort.signal).then((status) => {
          const latency = performance.now() - scheduled;
          if (status === 'aborted') rec.cutOff(latency);
          else if (status === 0) rec.errors++;
          else rec.done(status, latency);
          trace?.push(`${(performance.timeOrigin + scheduled).toFixed(1)} ${latency.toFixed(2)}`);
        }),
      );
    }
    await sleep(1);
  }
  await drain(Promise.all(inFlight), end + DRAIN_MS, abort);
  if (trace && TRACE_FILE) appendFileSync(TRACE_FILE, `# paced ${spec.url}${spec.path} at ${new Date(performance.timeOrigin + start).toISOString()}\n${trace.join('\n')}\n`);
  return rec.summary(end);
}

/**
 * `workers` loops, each request on a new connection. 'full': a new Agent-less socket every time (no session
 * cache: a full mutual-TLS handshake). 'resumed': one Agent without keep-alive but with a session cache, so each
 * new connection offers the last session ticket (a resumed handshake, as a client with a ticket cache would do).
 */
export async function freshConnections(spec: {
  url: string;
  tls: Tls;
  path: string;
  workers: number;
  durationS: number;
  mode: 'full' | 'resumed';
  /** Stops early after this many requests (key pool budget). */
  maxRequests?: number;
}): Promise<PhaseResult> {
  const shared = spec.mode === 'resumed' ? new Agent({ keepAlive: false, maxCachedSessions: 100, ...spec.tls }) : undefined;
  const opts: RequestOptions = shared ? { agent: shared } : { agent: false, ...spec.tls };
  const abort = controller();
  const start = performance.now();
  const end = start + spec.durationS * 1000;
  const rec = new Recorder(start);
  rec.resumed = 0;
  let started = 0;
  const worker = async () => {
    while (performance.now() < end && started++ < (spec.maxRequests ?? Infinity)) {
      const t = performance.now();
      const status = await once(spec.url, spec.path, opts, abort.signal, (s) => {
        if (s.isSessionReused()) rec.resumed!++;
      });
      if (status === 'aborted') rec.cutOff(performance.now() - t);
      else if (status === 0) rec.errors++;
      else rec.done(status, performance.now() - t);
    }
  };
  try {
    await drain(Promise.all(Array.from({ length: spec.workers }, worker)), end + DRAIN_MS, abort);
    return rec.summary(Math.min(performance.now(), end));
  } finally {
    shared?.destroy();
  }
}
