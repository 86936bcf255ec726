// Printing and saving results: one table per phase (KME beside the reference), the targets, and the JSON.
import { cpus, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { PhaseResult } from './load.js';

export interface Phase {
  id: string;
  title: string;
  /** Keys delivered per 2xx response (keys/s = req/s × this); 0 for status. */
  keysPerRequest: number;
  /** How req/s was computed, for the reader of the table. */
  rpsMethod: string;
  kme?: PhaseResult;
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

export function printPhase(p: Phase): void {
  console.log(`\n── ${p.id}. ${p.title}  (req/s: ${p.rpsMethod})`);
  const rows = [['', 'req/s', 'keys/s', 'p50 ms', 'p99 ms', 'requests', 'non-2xx', 'errors']];
  for (const [name, r] of [['KME', p.kme], ['reference', p.reference]] as const) {
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
  for (const n of p.notes) console.log(`   note: ${n}`);
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
