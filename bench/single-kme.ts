// The single-KME part: KME_B with SAE_A and SAE_B on a loopback link, on a fresh database — a fast link to fill the
// pool, a restart at the measuring rate, phases a–f (single-phases.ts), phase k (ingest-phase.ts: restarts of its
// own), phase s (sealing-phase.ts: restarts of its own), phase l (turnover-phase.ts: databases of its own), and a stop, so that it takes no CPU from what runs
// after it. The database is measured around the fill (growth per megabit ingested) and around phase c (growth per
// key delivered).
import type { SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import type { DemoPki } from '../src/pki/dev-pki.js';
import { tlsFor } from './client.js';
import { deliveryGrowth, growthPoint, ingestGrowth, type GrowthReport, type IngestGrowth } from './growth.js';
import { ingestPhase, type IngestResult } from './ingest-phase.js';
import { KmeHost } from './kme-host.js';
import { fillPool } from './measure.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import type { Phase } from './report.js';
import { ANALYZE, CPU_PROF, FILL_BPS, FILL_SECONDS, FILL_TARGET, LINK_BPS, MAX_KEY_COUNT, MEASURING_PHASES, PHASES } from './settings.js';
import { databaseFacts, identity } from './setup.js';
import { singlePhases } from './single-phases.js';
import { leave } from './timeline.js';
import { turnoverPhase, type TurnoverResult } from './turnover-phase.js';
import { sealingPhase, type SealingResult } from './sealing-phase.js';

const KEY_BITS = 256;

export async function singleKme(root: string, pki: DemoPki, token: SoftHsmToken, referenceUrl: string, done: (p: Phase) => void) {
  const host = await KmeHost.create(root, pki, token, { profile: CPU_PROF });
  const hosts = [host];
  const tlsA = tlsFor(host.A);
  console.log(`\nsingle KME: database ${host.databaseName}`);

  // Fill the pool with the fast link; the database before and after says what ingest costs on disk.
  await host.start({ rateBps: FILL_BPS, maxKeyCount: MAX_KEY_COUNT }, 'fill');
  console.log(`KME on ${host.url}`);
  const beforeFill = await growthPoint(host.databaseUrl, host.poolReading);
  const fill = await fillPool(host.stored, FILL_TARGET, FILL_SECONDS);
  const afterFill = await growthPoint(host.databaseUrl, host.poolReading);
  await host.stop();
  leave();
  const ingest: IngestGrowth = ingestGrowth(`filling, ${FILL_BPS / 1e6} Mbit/s link`, beforeFill, afterFill, KEY_BITS);
  const growth: GrowthReport = { ingest, delivery: [] };
  const db = await databaseFacts(host.databaseUrl, ANALYZE);
  growth.postgres_autovacuum = db.autovacuum;
  if (db.autovacuum !== 'on') {
    console.log(`note: autovacuum is ${db.autovacuum} on this PostgreSQL: tables are never analyzed, so the planner sees ` +
      `empty statistics${ANALYZE ? ' (ANALYZE was run after filling: BENCH_ANALYZE=1)' : ' (BENCH_ANALYZE=1 runs ANALYZE after filling)'}`);
  }

  // Phases a–f on one process at the measuring link rate (its whole profile is the bench's classic CPU summary).
  let profile: ProfileSummary | undefined;
  if ([...MEASURING_PHASES].some((id) => PHASES.has(id))) {
    const measuring = await host.start({ rateBps: LINK_BPS, maxKeyCount: MAX_KEY_COUNT }, 'a–f');
    console.log(`KME restarted with a ${LINK_BPS / 1e6} Mbit/s link for the measurements (pool: ${(await host.stored()).toLocaleString('en-US')} keys)`);
    // Phase c delivers the most keys with the least else going on: the database around it gives growth per key.
    const around = async (id: string, run: () => Promise<void>) => {
      if (id !== 'c') return run();
      const a = await growthPoint(host.databaseUrl, host.poolReading);
      await run();
      const b = await growthPoint(host.databaseUrl, host.poolReading);
      const g = deliveryGrowth('phase c, 128-key enc_keys', a, b, { ingestBytesPerKey: ingest.bytes_per_key });
      if (g) growth.delivery.push(g);
    };
    await singlePhases(
      { urls: { kme: host.url, reference: referenceUrl }, A: host.A, tlsA, tlsB: tlsFor(identity(pki, 'SAE_B')), stored: host.stored, around },
      done,
    );
    await host.stop(); // before reading its log and profile: both are complete only once it has exited
    leave();
    const dir = host.started.find((s) => s.child === measuring)?.profileDir;
    profile = dir ? summarizeProfile(dir) : undefined;
  }

  let ingestResult: IngestResult | undefined;
  if (PHASES.has('k')) {
    ingestResult = await ingestPhase(host, tlsA, done);
    leave();
  }

  let sealing: SealingResult | undefined;
  if (PHASES.has('s')) {
    sealing = await sealingPhase(host, tlsA, done);
    leave();
  }

  let turnover: TurnoverResult | undefined;
  if (PHASES.has('l')) {
    const l = await turnoverPhase({ root, pki, token, referenceUrl, tlsA, ingestBytesPerKey: ingest.bytes_per_key }, done);
    hosts.push(...l.hosts);
    turnover = l.result;
    if (l.growth) growth.delivery.push(l.growth);
    leave();
  }

  return {
    children: hosts.flatMap((h) => h.children),
    profileDirs: hosts.flatMap((h) => h.profileDirs),
    fill,
    db,
    growth,
    ingest: ingestResult,
    sealing,
    turnover,
    profile,
  };
}
