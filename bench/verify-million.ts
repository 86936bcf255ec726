// `npx tsx bench/verify-million.ts [N]`: the issue's row "verifying one million events takes at most 10 s on this
// machine". Builds a synthetic bundle of N events (default 1,000,000; see bench/verify-phase.ts for what it holds and
// why it is synthetic) in a temporary directory, times `kms audit verify` on it, prints the figures, and removes the
// directory. Exits 1 if the bundle did not verify (a bench of a verifier that rejects a genuine log means nothing).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyPhase } from './verify-phase.js';

const TARGET_SECONDS = 10;
const n = process.argv[2] === undefined ? 1_000_000 : Number(process.argv[2].replace(/[_,]/g, ''));
if (!Number.isSafeInteger(n) || n < 1) {
  console.error('usage: npx tsx bench/verify-million.ts [N events, default 1000000]');
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'kms-verify-bench-'));
try {
  const r = await verifyPhase({ events: n, dir });
  const rate = Math.round(r.events / r.verifySeconds);
  // The target is stated for one million events; for another N it is scaled to it.
  const target = (TARGET_SECONDS * n) / 1_000_000;
  console.log(
    `verify: ${r.events.toLocaleString('en')} events, bundle ${(r.bundleBytes / 1e6).toFixed(1)} MB, built in ${r.buildSeconds.toFixed(1)} s, ` +
      `verified in ${r.verifySeconds.toFixed(2)} s (${rate.toLocaleString('en')} events/s)`,
  );
  console.log(`        ${r.ok ? 'OK' : `FAILED: ${r.problem}`}; target ≤ ${+target.toFixed(2)} s${n === 1_000_000 ? '' : ` (10 s per million)`}: ${r.ok && r.verifySeconds <= target ? 'MET' : 'NOT MET'}`);
  if (!r.ok) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
