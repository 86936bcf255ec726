// Where the machine's CPU went during a measurement, per request: PostgreSQL's processes, the load generator (this
// process: autocannon and the pacers run in it), everything else (the server under test: the KME or the reference
// server, and whatever else the shared machine runs), and idle time. Read from /proc before and after the run, so
// it costs nothing while the run lasts. Time the hypervisor gave to other guests (steal) is counted apart: on this
// shared VM it is often a tenth of a core or more, and it is nobody's work on this machine. The figures tell whether a phase is held by the database, by the KME's own
// work, or by the load generator competing for the same 2 cores.
import { readdirSync, readFileSync } from 'node:fs';

export interface CpuSplit {
  /** CPU time per completed request, in µs, by consumer. */
  postgresUs: number;
  loadGeneratorUs: number;
  otherUs: number;
  idleUs: number;
  stealUs: number;
}

interface Snapshot {
  /** Seconds of CPU, by consumer; `total` and `idle` from /proc/stat (all cores). */
  postgres: number;
  self: number;
  total: number;
  idle: number;
  steal: number;
}

const TICK = 100; // USER_HZ on Linux

function processTicks(stat: string): number {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}

function snapshot(): Snapshot | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0); // idle + iowait
    const steal = cpu[7] ?? 0;
    const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
    let postgres = 0;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        if (stat.includes('(postgres)')) postgres += processTicks(stat);
      } catch {
        // the process ended between the listing and the read
      }
    }
    const self = processTicks(readFileSync('/proc/self/stat', 'utf8'));
    return { postgres: postgres / TICK, self: self / TICK, total: total / TICK, idle: idle / TICK, steal: steal / TICK };
  } catch {
    return undefined; // no /proc: no split
  }
}

/** Starts measuring; the returned function ends it and divides by the requests completed in between. */
export function startCpuSplit(): (requests: number) => CpuSplit | undefined {
  const before = snapshot();
  return (requests) => {
    const after = snapshot();
    if (!before || !after || requests <= 0) return undefined;
    const per = (s: number) => Math.round((s * 1e6) / requests);
    const postgres = after.postgres - before.postgres;
    const self = after.self - before.self;
    const idle = after.idle - before.idle;
    const steal = after.steal - before.steal;
    const busy = after.total - before.total - idle - steal;
    return {
      postgresUs: per(postgres),
      loadGeneratorUs: per(self),
      otherUs: per(Math.max(0, busy - postgres - self)),
      idleUs: per(idle),
      stealUs: per(steal),
    };
  };
}

export function describeCpuSplit(s: CpuSplit): string {
  return (
    `CPU per request: server ${s.otherUs} µs, PostgreSQL ${s.postgresUs} µs, load generator ${s.loadGeneratorUs} µs, idle ${s.idleUs} µs` +
    (s.stealUs ? `, stolen by the hypervisor ${s.stealUs} µs` : '')
  );
}
