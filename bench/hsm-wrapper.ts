// Calls per second through the PKCS#11 KeyWrapper on a throwaway SoftHSM2 token: 32-byte encrypts and decrypts,
// (a) one by one, each awaited before the next (like ingest), (b) 512 at a time under Promise.all (like
// Barrier.openAll), for the default (worker thread, bounded) and `timeoutMs: 0` (synchronous on the main thread).
//
//   npx tsx bench/hsm-wrapper.ts [--rounds=7] [--calls=4000] [--compare=NAME=path/to/module.ts ...]
//
// --compare adds another implementation exporting openPkcs11KeyWrapper (e.g. an older pkcs11.ts checked out to a
// temp dir) to the same run. The machine is shared and noisy, so every round runs every implementation in turn
// (alternating A/B) and the result is the median per implementation and phase, with all samples beside it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { KeyWrapper } from '../src/hsm/key-wrapper.js';
import { openPkcs11KeyWrapper, type Pkcs11Options } from '../src/hsm/pkcs11.js';
import { createSoftHsmToken } from '../hsm-mock/softhsm-token.js';

const arg = (name: string, fallback: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const rounds = Number(arg('rounds', '7'));
const calls = Number(arg('calls', '4000'));
const BURST = 512;

type Open = (o: Pkcs11Options) => Promise<KeyWrapper>;
const impls: Array<{ name: string; open: Open; timeoutMs?: number }> = [
  { name: 'worker', open: openPkcs11KeyWrapper },
  { name: 'sync', open: openPkcs11KeyWrapper, timeoutMs: 0 },
];
for (const spec of process.argv.filter((a) => a.startsWith('--compare='))) {
  const [name, path] = spec.slice('--compare='.length).split('=') as [string, string];
  const mod = (await import(pathToFileURL(resolve(path)).href)) as { openPkcs11KeyWrapper: Open };
  impls.push({ name, open: mod.openPkcs11KeyWrapper });
}

const dir = mkdtempSync(join(tmpdir(), 'kms-hsm-bench-'));
const token = createSoftHsmToken(dir, { label: 'bench' });
if ('skip' in token) throw new Error(token.skip);
const opts = { module: token.module, tokenLabel: token.tokenLabel, pin: token.pin, keyLabel: 'bench', createIfMissing: true };
const wrappers: KeyWrapper[] = [];
for (const impl of impls) wrappers.push(await impl.open({ ...opts, timeoutMs: impl.timeoutMs }));

const plaintext = randomBytes(32);
const aad = Buffer.from('link-1|block-1');
// Calls per second, and the main thread's busy time per call (event loop utilization): what the KME's event loop,
// which also runs TLS, HTTP and Postgres, pays per HSM call.
let elu = performance.eventLoopUtilization();
const perSecond = (n: number, started: number) => {
  const rate = Math.round(n / ((performance.now() - started) / 1000));
  const busy = performance.eventLoopUtilization(elu);
  mainUs = Math.round((10 * busy.active * 1000) / n) / 10;
  return rate;
};
let mainUs = 0;
const phases: Record<string, (w: KeyWrapper) => Promise<number>> = {
  'encrypt, one by one': async (w) => {
    const started = performance.now();
    for (let i = 0; i < calls; i++) await w.encrypt(plaintext, aad);
    return perSecond(calls, started);
  },
  'decrypt, one by one': async (w) => {
    const sealed = await w.encrypt(plaintext, aad);
    const started = performance.now();
    for (let i = 0; i < calls; i++) await w.decrypt(sealed, aad);
    return perSecond(calls, started);
  },
  [`encrypt, ${BURST} under Promise.all`]: async (w) => {
    const bursts = Math.max(1, Math.round(calls / BURST));
    const started = performance.now();
    for (let i = 0; i < bursts; i++) await Promise.all(Array.from({ length: BURST }, () => w.encrypt(plaintext, aad)));
    return perSecond(bursts * BURST, started);
  },
  [`decrypt, ${BURST} under Promise.all`]: async (w) => {
    const sealed = await w.encrypt(plaintext, aad);
    const bursts = Math.max(1, Math.round(calls / BURST));
    const started = performance.now();
    for (let i = 0; i < bursts; i++) await Promise.all(Array.from({ length: BURST }, () => w.decrypt(sealed, aad)));
    return perSecond(bursts * BURST, started);
  },
};

const samples = new Map<string, number[]>();
const mainBusy = new Map<string, number[]>();
for (const w of wrappers) for (const phase of Object.values(phases)) await phase(w); // warm-up
for (let r = 0; r < rounds; r++) {
  for (const [phase, run] of Object.entries(phases)) {
    // Alternate the order from round to round, so that no implementation always runs first.
    const order = r % 2 === 0 ? impls.map((_, i) => i) : impls.map((_, i) => impls.length - 1 - i);
    for (const i of order) {
      const key = `${phase}|${impls[i]!.name}`;
      elu = performance.eventLoopUtilization();
      samples.set(key, [...(samples.get(key) ?? []), await run(wrappers[i]!)]);
      mainBusy.set(key, [...(mainBusy.get(key) ?? []), mainUs]);
    }
  }
}
for (const w of wrappers.reverse()) await w.close();
rmSync(dir, { recursive: true, force: true });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const result: Record<string, Record<string, { median: number; samples: number[]; mainUsPerCall: number }>> = {};
for (const [key, xs] of samples) {
  const [phase, name] = key.split('|') as [string, string];
  (result[phase] ??= {})[name] = { median: median(xs), samples: xs, mainUsPerCall: median(mainBusy.get(key)!) };
}
for (const [phase, byImpl] of Object.entries(result)) {
  const cells = Object.entries(byImpl).map(([name, r]) => `${name} ${r.median}/s (main ${r.mainUsPerCall} µs/call) [${r.samples.join(' ')}]`);
  console.log(`${phase.padEnd(34)} ${cells.join('   ')}`);
}
if (process.argv.includes('--json')) console.log(JSON.stringify({ rounds, calls, perSecond: result }));
