import type { Logger } from '../log.js';
import { startBackgroundJob } from './background-job.js';
import type { KekRotation } from './kek-rotation.js';
import { LeaderLock } from './leader-lock.js';

/** Chunks (and relayed keys) re-wrapped per pass, and the pause between passes while there is more. */
const BATCH = 16;
const PACE_MS = 100;

/**
 * The KEK re-wrap in the background (src/lifecycle/kek-rotation.ts): leader-only (a Postgres advisory lock, so that
 * replicas can run), throttled — at most BATCH chunks every PACE_MS while rows remain under an older version (about
 * 160 chunks, some 650,000 keys of 256 bits, a second), then a look every `everyMs` — and resumable: it keeps no
 * state, so after a crash it carries on where the rows say. Destroys old versions once nothing refers to them.
 */
export function startKekRewrapJob(deps: { rotation: KekRotation; databaseUrl: string; log: Logger; everyMs?: number }): () => Promise<void> {
  const lock = new LeaderLock(deps.databaseUrl, 'kek-rewrap', deps.log);
  let moved = 0;
  const stop = startBackgroundJob({
    what: 'KEK re-wrap',
    log: deps.log,
    everyMs: deps.everyMs ?? 2_000,
    step: async () => {
      if (!(await lock.lead())) return;
      const n = await deps.rotation.rewrapOnce(BATCH);
      moved += n;
      if (n > 0) return PACE_MS;
      if (moved > 0) deps.log.info({ rows: moved }, 'KEK re-wrap done: nothing is sealed under an older version');
      moved = 0;
      await deps.rotation.destroyUnused();
    },
  });
  return async () => {
    await stop();
    await lock.close();
  };
}
