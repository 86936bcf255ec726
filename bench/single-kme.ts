// The single-KME part: KME_B with SAE_A and SAE_B on a loopback link, on a fresh database — a fast link to fill the
// pool, a restart at the measuring rate, phases a–f (single-phases.ts), and a stop, so that it takes no CPU from
// what runs after it.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import type { DemoPki } from '../src/pki/dev-pki.js';
import type { Child } from './children.js';
import { onCleanup } from './cleanup.js';
import { JsonClient, tlsFor } from './client.js';
import { fillPool } from './measure.js';
import type { ProfileSummary } from './profile.js';
import type { Phase } from './report.js';
import { ADMIN_URL, ANALYZE, CPU_PROF, DB_POOL, FILL_BPS, FILL_SECONDS, FILL_TARGET, LINK_BPS, MAX_KEY_COUNT } from './settings.js';
import { createDatabase, databaseFacts, freePort, identity, startKme, writeKmeConfig } from './setup.js';
import { singlePhases } from './single-phases.js';

/** `readProfile` reads the measured KME's CPU profile (BENCH_CPU_PROF=1) from the folder it wrote it to. */
export async function singleKme(
  root: string,
  pki: DemoPki,
  token: SoftHsmToken,
  referenceUrl: string,
  done: (p: Phase) => void,
  readProfile: (dir: string) => ProfileSummary | undefined,
) {
  const databaseUrl = await createDatabase(ADMIN_URL);
  const port = await freePort();
  const A = identity(pki, 'SAE_A');
  const kmeUrl = `https://127.0.0.1:${port}`;
  const kmeEnv = { databaseUrl, token };
  const children: Child[] = [];
  console.log(`\nsingle KME: database ${new URL(databaseUrl).pathname.slice(1)}`);

  const config = (rate: number) =>
    writeKmeConfig(root, pki, token, { port, rateBitsPerSecond: rate, maxKeyCount: MAX_KEY_COUNT, dbPoolSize: DB_POOL });
  const filler = await startKme(config(FILL_BPS), kmeEnv, port, A);
  children.push(filler);
  console.log(`KME on ${kmeUrl}`);

  const status = new JsonClient(kmeUrl, A);
  onCleanup('close the status client', () => status.close());
  const stored = async () => {
    const r = await status.call('GET', '/api/v1/keys/SAE_B/status');
    if (r.status !== 200) throw new Error(`status answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.stored_key_count as number;
  };

  // Fill the pool with the fast link, then restart the KME with the measuring link rate.
  const fill = await fillPool(stored, FILL_TARGET, FILL_SECONDS);
  await filler.stop();
  const db = await databaseFacts(databaseUrl, ANALYZE);
  if (db.autovacuum !== 'on') {
    console.log(`note: autovacuum is ${db.autovacuum} on this PostgreSQL: tables are never analyzed, so the planner sees ` +
      `empty statistics${ANALYZE ? ' (ANALYZE was run after filling: BENCH_ANALYZE=1)' : ' (BENCH_ANALYZE=1 runs ANALYZE after filling)'}`);
  }
  const profDir = join(root, 'prof');
  mkdirSync(profDir);
  const kme = await startKme(config(LINK_BPS), kmeEnv, port, A, CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []);
  children.push(kme);
  console.log(`KME restarted with a ${LINK_BPS / 1e6} Mbit/s link for the measurements (pool: ${(await stored()).toLocaleString('en-US')} keys)`);

  await singlePhases({ urls: { kme: kmeUrl, reference: referenceUrl }, A, tlsA: tlsFor(A), tlsB: tlsFor(identity(pki, 'SAE_B')), stored }, done);

  await kme.stop(); // before reading its log and profile: both are complete only once it has exited
  status.close();
  return { children, fill, db, profile: CPU_PROF ? readProfile(profDir) : undefined };
}
