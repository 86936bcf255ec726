// Reads a V8 .cpuprofile (from `node --cpu-prof`) and lists where the time went: the top functions by self time,
// and the same time grouped by the package or Node subsystem the code belongs to.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

export interface ProfileSummary {
  totalMs: number;
  topFunctions: Array<{ fn: string; where: string; selfMs: number; pct: number }>;
  byArea: Array<{ area: string; selfMs: number; pct: number }>;
}

export function summarizeProfile(path: string, top = 15): ProfileSummary {
  const prof = JSON.parse(readFileSync(path, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  // Self time per node: the sum of the time deltas of the samples that landed in it.
  const selfUs = new Map<number, number>();
  prof.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  const byArea = new Map<string, number>();
  let total = 0;
  for (const node of prof.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    if (us === 0) continue;
    total += us;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${functionName}@${where}`;
    const entry = byFn.get(key) ?? { fn: functionName || '(anonymous)', where, us: 0 };
    entry.us += us;
    byFn.set(key, entry);
    const area = areaOf(functionName, url);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const pct = (us: number) => Math.round((1000 * us) / Math.max(total, 1)) / 10;
  return {
    totalMs: Math.round(total / 1000),
    topFunctions: [...byFn.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({ fn: e.fn, where: e.where, selfMs: Math.round(e.us / 1000), pct: pct(e.us) })),
    byArea: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, selfMs: Math.round(us / 1000), pct: pct(us) })),
  };
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
