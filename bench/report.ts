// Printing and saving results: one table per phase (KME beside the reference), the targets, and the JSON.
import { cpus, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Child } from './children.js';
import { describeCpuSplit } from './cpu-split.js';
import type { PhaseResult } from './load.js';

export interface Phase {
  id: string;
  title: string;
  /** Keys delivered per 2xx response (keys/s = req/s × this); 0 for status. */
  keysPerRequest: number;
  /** How req/s was computed, for the reader of the table. */
  rpsMethod: string;
  /** A cross-KME phase: the single-KME phase of the same request shape it is compared with. */
  counterpart?: string;
  kme?: PhaseResult;
  /** Phase r: the same load split over two replicas of that KME (`kme` is then one of them alone). */
  replicas?: PhaseResult;
  reference?: PhaseResult;
  notes: string[];
}

export interface Target {
  what: string;
  goal: string;
  measured: string;
  met: boolean | null; // null: not measured in this run
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** `counterpart`: the single-KME phase a cross-KME phase is compared with (when it ran). */
export function printPhase(p: Phase, counterpart?: Phase): void {
  console.log(`\n── ${p.id}. ${p.title}  (req/s: ${p.rpsMethod})`);
  const rows = [['', 'req/s', 'keys/s', 'p50 ms', 'p99 ms', 'requests', 'non-2xx', 'errors']];
  const runs = p.replicas
    ? ([['KME, one process', p.kme], ['KME, two replicas', p.replicas], ['reference', p.reference]] as const)
    : ([['KME', p.kme], ['reference', p.reference]] as const);
  for (const [name, r] of runs) {
    if (!r) continue;
    rows.push([
      name,
      fmt(r.rpsMedian),
      p.keysPerRequest ? fmt(r.rpsMedian * p.keysPerRequest) : '–',
      fmt(r.p50Ms, 1),
      fmt(r.p99Ms, 1),
      fmt(r.requests),
      r.non2xx ? `${fmt(r.non2xx)} ${JSON.stringify(r.statusCodes)}` : '0',
      fmt(r.errors) + (r.unanswered ? ` +${fmt(r.unanswered)} cut off` : '') + (r.resumed !== undefined ? `  (resumed ${fmt(r.resumed)})` : ''),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log('   ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  if (p.kme && p.reference && p.reference.rpsMedian > 0) {
    console.log(`   KME/reference: throughput ${fmt(p.kme.rpsMedian / p.reference.rpsMedian, 2)}×, p99 ${fmt(p.kme.p99Ms / Math.max(p.reference.p99Ms, 0.01), 1)}×`);
  }
  const two = replicaRatios(p);
  if (two) {
    console.log(`   two replicas/one process: throughput ${fmt(two.to_one_process, 2)}×, p99 ${fmt(two.p99_to_one_process, 1)}×` +
      (two.to_reference !== undefined ? `; two replicas/reference: throughput ${fmt(two.to_reference, 2)}×` : ''));
  }
  for (const [name, r] of runs) {
    if (r?.cpu) console.log(`   ${name} run: ${describeCpuSplit(r.cpu)}`);
  }
  const vs = counterpart ? crossToSingle(p, counterpart) : undefined;
  if (vs) console.log(`   ${describe(vs)}`);
  for (const n of p.notes) console.log(`   note: ${n}`);
}

/** Phase r: the two replicas' run over the one process's (and over the reference's), when both ran. */
export function replicaRatios(p: Phase): { to_one_process: number; p99_to_one_process: number; to_reference?: number } | undefined {
  if (!p.replicas || !p.kme || p.kme.rpsMedian <= 0) return undefined;
  return {
    to_one_process: p.replicas.rpsMedian / p.kme.rpsMedian,
    p99_to_one_process: p.replicas.p99Ms / Math.max(p.kme.p99Ms, 0.01),
    ...(p.reference?.rpsMedian ? { to_reference: p.replicas.rpsMedian / p.reference.rpsMedian } : {}),
  };
}

export interface CrossToSingle {
  phase: string;
  single: string;
  /** KME req/s of the cross-KME phase over that of the single-KME phase, both from this run. */
  throughput: number;
  /** The same, each first divided by its own reference run (cancels the machine's drift between the two). */
  throughput_per_reference?: number;
  p99: number;
  /** Non-2xx answers in the cross-KME run: req/s counts them, so a ratio with any is not a delivery rate. */
  non2xx: number;
}

export function crossToSingle(p: Phase, single: Phase): CrossToSingle | undefined {
  if (!p.kme || !single.kme || single.kme.rpsMedian <= 0) return undefined;
  const perRef = (x: Phase) => (x.kme && x.reference?.rpsMedian ? x.kme.rpsMedian / x.reference.rpsMedian : undefined);
  const a = perRef(p);
  const b = perRef(single);
  return {
    phase: p.id,
    single: single.id,
    throughput: p.kme.rpsMedian / single.kme.rpsMedian,
    ...(a !== undefined && b ? { throughput_per_reference: a / b } : {}),
    p99: p.kme.p99Ms / Math.max(single.kme.p99Ms, 0.01),
    non2xx: p.kme.non2xx,
  };
}

const describe = (r: CrossToSingle) =>
  `${r.phase}/${r.single} (cross-KME over single-KME, same run): throughput ${fmt(r.throughput, 2)}×` +
  (r.throughput_per_reference !== undefined ? ` (${fmt(r.throughput_per_reference, 2)}× as shares of their reference runs)` : '') +
  `, p99 ${fmt(r.p99, 1)}×` +
  (r.non2xx ? `  — but ${fmt(r.non2xx)} non-2xx answers are counted in its req/s` : '');

export function printCrossToSingle(rows: CrossToSingle[]): void {
  if (rows.length === 0) return;
  console.log('\n── Cross-KME against single-KME (same run)');
  for (const r of rows) console.log(`   ${describe(r)}`);
}

export function printTargets(targets: Target[]): void {
  console.log('\n── Targets from the issue');
  for (const t of targets) {
    const mark = t.met === null ? 'NOT MEASURED' : t.met ? 'MET' : 'NOT MET';
    console.log(`   ${mark.padEnd(12)} ${t.what}: goal ${t.goal}, measured ${t.measured}`);
  }
}

export function machine() {
  const c = cpus();
  return {
    cpus: c.length,
    cpu_model: c[0]?.model ?? 'unknown',
    total_memory_mb: Math.round(totalmem() / 2 ** 20),
    node: process.version,
    openssl: process.versions.openssl,
    platform: `${process.platform} ${process.arch}`,
  };
}

export function writeJson(path: string, data: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(data, null, 2) + '\n');
}

export interface LogSummary {
  count: number;
  sample: string[];
  /** Lines left out of `count` because they are expected (e.g. a notice every start prints). */
  expected?: { what: string; count: number };
}

/**
 * Lines servers printed at warn level or above (pino JSON: level ≥ 40), or anything that is not pino JSON.
 * `expected` lines are not counted as notable: ignored (`what` absent) or counted apart under `what`.
 */
export function serverLog(children: Child[], expected?: RegExp, what?: string): LogSummary {
  const lines = children.flatMap((c) => c.lines).filter((l) => l.trim() !== '');
  const known = expected ? lines.filter((l) => expected.test(l)) : [];
  const notable = lines.filter((l) => {
    if (expected?.test(l)) return false;
    try {
      return (JSON.parse(l) as { level?: number }).level! >= 40;
    } catch {
      return true;
    }
  });
  const unique = [...new Set(notable.map((l) => l.slice(0, 400)))];
  return { count: notable.length, sample: unique.slice(0, 15), ...(what ? { expected: { what, count: known.length } } : {}) };
}
