// `npx tsx bench/metrics-overhead.ts`: what the metrics add to each request (issue 15 item 2), measured in
// isolation, a few seconds on one core. Not part of `npm run bench` (whose KME carries the metrics anyway): this
// separates their cost from the noise of a whole KME. Per request the KME pays one onResponse hook with one
// histogram observation, one counter increment per pair for keys delivered, the failure watchers on its database
// connections' queries and on each HSM call, and on errors a reason lookup. Prints nanoseconds per call.
import { Histogram, Registry } from 'prom-client';
import { metricOperationOf } from '../src/app.js';
import { RequestMetrics } from '../src/metrics/request-metrics.js';
import { SwappableKeyWrapper } from '../src/hsm/swappable-wrapper.js';
import { createMockKeyWrapper } from '../hsm-mock/mock-key-wrapper.js';

const metrics = new RequestMetrics(new Registry());

function perCall(what: string, n: number, fn: (i: number) => void): number {
  for (let i = 0; i < 10_000; i++) fn(i); // warm up
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    rounds.push(Number(process.hrtime.bigint() - t0) / n);
  }
  const median = rounds.sort((a, b) => a - b)[2]!;
  console.log(`${what.padEnd(58)} ${median.toFixed(0).padStart(7)} ns`);
  return median;
}

async function perCallAsync(what: string, n: number, fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 2_000; i++) await fn();
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await fn();
    rounds.push(Number(process.hrtime.bigint() - t0) / n);
  }
  const median = rounds.sort((a, b) => a - b)[2]!;
  console.log(`${what.padEnd(58)} ${median.toFixed(0).padStart(7)} ns`);
  return median;
}

const ops = ['enc_keys', 'dec_keys', 'status'] as const;
// For comparison: prom-client's own histogram, as the metrics first used it (it validates and hashes labels per call).
const reference = new Histogram({ name: 'h', help: 'h', labelNames: ['operation', 'code'], buckets: [0.001, 0.01, 0.1, 1, 10], registers: [] }).labels('enc_keys', '200');
perCall("prom-client Histogram observe (for comparison)", 1_000_000, () => reference.observe(0.004));
perCall('latency observation', 1_000_000, (i) => metrics.request(ops[i % 3]!, 200, 0.004));
perCall('keys delivered, one pair', 1_000_000, () => metrics.keysDelivered('enc_keys', 'SAE_A', 'SAE_B', 1));
perCall('refusal with its reason (a 503 no_key_material)', 200_000, () =>
  metrics.refused('enc_keys', 'sae:SAE_A', { statusCode: 503, message: 'not enough key material for SAE_A → SAE_B: requested 1 key(s) of 256 bits, try again later or ask for fewer keys' }),
);

// HSM calls with and without the failure watcher, on hsm-mock (a real AES-GCM in memory).
const plain = new SwappableKeyWrapper(createMockKeyWrapper());
const watched = new SwappableKeyWrapper(createMockKeyWrapper(), () => undefined);
const data = Buffer.alloc(32, 7);
const aad = Buffer.from('aad');
const a = await perCallAsync('HSM encrypt, hsm-mock, unwatched', 50_000, () => plain.encrypt(data, aad));
const b = await perCallAsync('HSM encrypt, hsm-mock, watched', 50_000, () => watched.encrypt(data, aad));
console.log(`${'  difference'.padEnd(58)} ${(b - a).toFixed(0).padStart(7)} ns`);

// The onResponse hook's body as src/app.ts runs it (its metricOperationOf): the operation from the URL, then the
// observation. (Fastify's hook runner adds one function call; a whole request measured with and without the hook
// would drown this in noise.)
const urls = ['/api/v1/keys/SAE_B/enc_keys?number=1', '/api/v1/keys/SAE_A/dec_keys', '/api/v1/keys/SAE_B/status'];
perCall('onResponse hook body (operation from the URL + observation)', 1_000_000, (i) => metrics.request(metricOperationOf(urls[i % 3]!), 200, 0.004));
