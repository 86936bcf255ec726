// Reads V8 .cpuprofile files (from `node --cpu-prof`) and lists where the time went: the top functions by self time,
// and the same time grouped by the package or Node subsystem the code belongs to.
//
// Per phase: a KME process writes its profile when it exits, covering its whole life. The bench marks each phase
// as a window on the monotonic clock V8 stamps samples with (timeline.ts), so the samples of a phase are those whose
// time falls in its window: per-phase costs from one profile, without talking to the KME while it runs.
//
// Main thread only. A process writes one file per thread that got --cpu-prof, but the KME starts its PKCS#11 worker
// with `execArgv: []`, so that worker is never profiled; the other file is the module loader's thread (tsx hooks),
// idle once the KME has started. The HSM's share shows on the main thread as postMessage and the hsm area.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface RawProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** A profile ready to be cut by time: each sample's node and time (µs, monotonic clock), in order. */
export interface LoadedProfile {
  file: string;
  startUs: number;
  endUs: number;
  nodes: Map<number, ProfileNode>;
  sampleNode: number[];
  sampleUs: number[];
  /** Each sample's weight: the time since the previous sample. */
  sampleWeight: number[];
}

export interface ProfileSummary {
  totalMs: number;
  topFunctions: Array<{ fn: string; where: string; selfMs: number; pct: number }>;
  byArea: Array<{ area: string; selfMs: number; pct: number }>;
}

export function loadProfile(path: string): LoadedProfile {
  const prof = JSON.parse(readFileSync(path, 'utf8')) as RawProfile;
  const sampleUs: number[] = new Array(prof.samples.length);
  let t = prof.startTime;
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i] ?? 0;
    sampleUs[i] = t;
  }
  return {
    file: path,
    startUs: prof.startTime,
    endUs: prof.endTime,
    nodes: new Map(prof.nodes.map((n) => [n.id, n])),
    sampleNode: prof.samples,
    sampleUs,
    sampleWeight: prof.timeDeltas,
  };
}

/** Node names profile files CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main thread. */
const isMainThread = (file: string) => file.split('.').at(-3) === '0';

/** The main thread's profile in `dir` (the folder of one KME process), if it wrote one. */
export function mainProfile(dir: string): string | undefined {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile') && isMainThread(f))
    .map((f) => join(dir, f))[0];
}

/**
 * Self time per function and per area over the samples of `profiles` that fall in [fromUs, toUs) (all of them
 * without bounds). `busyOnly` leaves out the (idle) samples, so that the shares are shares of the work done.
 */
export function summarize(profiles: LoadedProfile[], opts: { fromUs?: number; toUs?: number; top?: number; busyOnly?: boolean } = {}): ProfileSummary {
  const from = opts.fromUs ?? -Infinity;
  const to = opts.toUs ?? Infinity;
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  const byArea = new Map<string, number>();
  let total = 0;
  for (const p of profiles) {
    for (let i = firstAtOrAfter(p.sampleUs, from); i < p.sampleUs.length && p.sampleUs[i]! < to; i++) {
      const node = p.nodes.get(p.sampleNode[i]!);
      if (!node) continue;
      const us = p.sampleWeight[i] ?? 0;
      const { functionName, url, lineNumber } = node.callFrame;
      if (opts.busyOnly && functionName === '(idle)') continue;
      total += us;
      const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
      const key = `${functionName}@${where}`;
      const entry = byFn.get(key) ?? { fn: functionName || '(anonymous)', where, us: 0 };
      entry.us += us;
      byFn.set(key, entry);
      const area = areaOf(functionName, url);
      byArea.set(area, (byArea.get(area) ?? 0) + us);
    }
  }
  const pct = (us: number) => Math.round((1000 * us) / Math.max(total, 1)) / 10;
  return {
    totalMs: Math.round(total / 1000),
    topFunctions: [...byFn.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, opts.top ?? 15)
      .map((e) => ({ fn: e.fn, where: e.where, selfMs: Math.round(e.us / 1000), pct: pct(e.us) })),
    byArea: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, selfMs: Math.round(us / 1000), pct: pct(us) })),
  };
}

/** The whole main-thread profile in `dir` (idle included), as the bench has always reported it. */
export function summarizeProfile(dir: string, top = 15): ProfileSummary | undefined {
  const main = mainProfile(dir);
  return main ? summarize([loadProfile(main)], { top }) : undefined;
}

/** The KME's main thread (JavaScript, TLS, HTTP, pg) in one window: busy time, its share of the window, and where it went. */
export interface WindowProfile {
  label: string;
  window_ms: number;
  busy_ms: number;
  busy_pct_of_window: number;
  top_areas: Array<{ area: string; pct: number }>;
  top_functions: Array<{ fn: string; where: string; pct: number }>;
}

/**
 * Per-window costs from every profile in `dirs` (each a KME process's folder), for the timeline's windows that
 * some profile covers. Shares are of busy time (idle left out); busy_pct_of_window says how loaded the thread was.
 */
export function profileByWindow(dirs: string[], windows: Array<{ label: string; fromUs: number; toUs: number }>, top = 6): WindowProfile[] {
  const main = dirs.flatMap((d) => mainProfile(d) ?? []).map(loadProfile);
  const out: WindowProfile[] = [];
  for (const w of windows) {
    const overlapping = main.filter((p) => p.startUs < w.toUs && p.endUs > w.fromUs);
    const windowMs = (w.toUs - w.fromUs) / 1000;
    if (overlapping.length === 0 || windowMs < 1000) continue; // under a second: too few samples to say anything
    const s = summarize(overlapping, { fromUs: w.fromUs, toUs: w.toUs, top, busyOnly: true });
    out.push({
      label: w.label,
      window_ms: Math.round(windowMs),
      busy_ms: s.totalMs,
      busy_pct_of_window: Math.round((1000 * s.totalMs) / Math.max(windowMs, 1)) / 10,
      top_areas: s.byArea.slice(0, top).map((a) => ({ area: a.area, pct: a.pct })),
      top_functions: s.topFunctions.map((f) => ({ fn: f.fn, where: f.where, pct: f.pct })),
    });
  }
  return out;
}

export function printProfile(p: ProfileSummary): void {
  console.log(`\n── KME CPU profile (measuring KME process of phases a–f, main thread, ${p.totalMs.toLocaleString('en-US')} ms sampled)`);
  console.log('   by area:');
  for (const a of p.byArea.slice(0, 12)) console.log(`     ${a.pct.toFixed(1).padStart(5)}%  ${a.area}`);
  console.log('   top functions by self time:');
  for (const f of p.topFunctions) console.log(`     ${f.pct.toFixed(1).padStart(5)}%  ${f.fn}  ${f.where}`);
}

export function printProfileByWindow(rows: WindowProfile[]): void {
  if (rows.length === 0) return;
  console.log("\n── KME CPU by phase (main thread; shares of its busy time; busy = share of the phase's wall time it worked)");
  const list = (xs: Array<{ pct: number; name: string }>) => xs.map((x) => `${x.pct.toFixed(1)}% ${x.name}`).join(', ');
  for (const r of rows) {
    console.log(`   ${r.label} (${(r.window_ms / 1000).toFixed(1)} s): busy ${r.busy_pct_of_window}%`);
    console.log(`     areas: ${list(r.top_areas.map((a) => ({ pct: a.pct, name: a.area })))}`);
    console.log(`     functions: ${list(r.top_functions.map((f) => ({ pct: f.pct, name: f.where ? `${f.fn} (${f.where})` : f.fn })))}`);
  }
}

function firstAtOrAfter(sorted: number[], t: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const src = url.indexOf('/src/');
  return src >= 0 ? url.slice(src + 1) : url.replace(/^file:\/\//, '');
}

/** Coarse buckets: which package or subsystem a function belongs to ("(program)"/"(idle)"/"(garbage collector)" stay). */
function areaOf(fn: string, url: string): string {
  if (!url) return fn.startsWith('(') ? fn : `native: ${fn}`;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return url.replace(/^node:internal\//, 'node:').split('/').slice(0, 2).join('/');
  const src = /\/src\/([^/]+)/.exec(url);
  return src ? `kms src/${src[1]}` : url;
}
