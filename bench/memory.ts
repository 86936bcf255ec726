// Resident memory of the KME child processes, sampled on a timer for the whole run: the issue asks for the maximum
// per KME (≤ 300 MiB), and a maximum is only as good as the sampling covers the run. RSS is read from
// /proc/PID/status (VmRSS) because that is what the kernel charges the process, heap, native buffers (TLS, the
// PKCS#11 module, pg's parsers) and worker threads alike; process.memoryUsage() would need code in the KME.
import { readFileSync } from 'node:fs';
import type { Child } from './children.js';
import { current } from './timeline.js';

const MiB = 1024 * 1024;

/** The resident set of `pid` in bytes, or undefined once the process is gone (or on a system without /proc). */
export function readRss(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

interface Tracked {
  name: string;
  pid: number;
  /** Sampled only while running: an exited child's pid may be given to another process. */
  running: () => boolean;
  /** The timeline window the process was started in (which stage it served). */
  startedIn: string;
  samples: number;
  firstBytes?: number;
  lastBytes?: number;
  maxBytes: number;
  maxAt?: string;
}

export interface MemoryReport {
  interval_seconds: number;
  goal_mib: number;
  /** Per KME name (every process that ran under that name): the highest sample. */
  max_by_kme: Record<string, { max_mib: number; during: string; pid: number }>;
  /** The highest sample of any KME in each timeline window. */
  max_by_window: Record<string, number>;
  processes: Array<{ name: string; pid: number; started_in: string; samples: number; first_mib?: number; last_mib?: number; max_mib: number; max_during?: string }>;
}

const mib = (bytes: number) => Math.round((10 * bytes) / MiB) / 10;

/** Samples every tracked child every `intervalMs` from start() to stop(); children can be added at any time. */
export class RssSampler {
  private readonly tracked: Tracked[] = [];
  private readonly byWindow = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private intervalMs = 1000;

  track(child: Child): void {
    const pid = child.proc.pid;
    if (pid === undefined) return;
    const running = () => child.proc.exitCode === null && child.proc.signalCode === null;
    this.tracked.push({ name: child.name, pid, running, startedIn: current() ?? '–', samples: 0, maxBytes: 0 });
  }

  start(intervalMs: number): void {
    this.intervalMs = intervalMs;
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref(); // never what keeps the bench alive
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One sample of every live tracked process; also callable directly (the soak samples on its own clock). */
  sample(): void {
    const window = current() ?? '–';
    for (const t of this.tracked) {
      const rss = t.running() ? readRss(t.pid) : undefined;
      if (rss === undefined) continue;
      t.samples++;
      t.firstBytes ??= rss;
      t.lastBytes = rss;
      if (rss > t.maxBytes) {
        t.maxBytes = rss;
        t.maxAt = window;
      }
      this.byWindow.set(window, Math.max(this.byWindow.get(window) ?? 0, rss));
    }
  }

  report(goalMib: number): MemoryReport {
    const byKme: MemoryReport['max_by_kme'] = {};
    for (const t of this.tracked) {
      if (t.samples === 0) continue;
      const best = byKme[t.name];
      if (!best || mib(t.maxBytes) > best.max_mib) byKme[t.name] = { max_mib: mib(t.maxBytes), during: t.maxAt ?? '–', pid: t.pid };
    }
    return {
      interval_seconds: this.intervalMs / 1000,
      goal_mib: goalMib,
      max_by_kme: byKme,
      max_by_window: Object.fromEntries([...this.byWindow.entries()].map(([w, b]) => [w, mib(b)])),
      processes: this.tracked.map((t) => ({
        name: t.name,
        pid: t.pid,
        started_in: t.startedIn,
        samples: t.samples,
        ...(t.firstBytes !== undefined ? { first_mib: mib(t.firstBytes), last_mib: mib(t.lastBytes!) } : {}),
        max_mib: mib(t.maxBytes),
        ...(t.maxAt ? { max_during: t.maxAt } : {}),
      })),
    };
  }
}

/** The one sampler every KME started through setup.ts's startKme registers with. */
export const kmeMemory = new RssSampler();

export function printMemory(r: MemoryReport): void {
  console.log(`\n── KME resident memory (VmRSS every ${r.interval_seconds} s; goal ≤ ${r.goal_mib} MiB per KME)`);
  for (const [name, m] of Object.entries(r.max_by_kme)) console.log(`   ${name.padEnd(6)} max ${m.max_mib.toFixed(1).padStart(6)} MiB, during ${m.during}`);
  const windows = Object.entries(r.max_by_window);
  if (windows.length) console.log(`   highest KME sample per part of the run: ${windows.map(([w, m]) => `${w} ${m.toFixed(0)}`).join(', ')} (MiB)`);
}
