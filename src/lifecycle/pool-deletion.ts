import type { Logger } from '../log.js';
import type { PoolGate } from '../pool/pool-gate.js';
import type { Db } from '../store/db.js';
import { deletePoolIfDue, duePoolDeletions } from '../store/pool-states.js';
import { startBackgroundJob } from './background-job.js';

/**
 * Carries out pool deletions operators scheduled (`kms pool schedule-deletion`) once their waiting period is over:
 * the pool's unbound material is destroyed and the pool is deleted, audited (src/store/pool-states.ts). Checked every
 * few seconds; several processes may run it (the deletion locks the link's row and skips one already taken).
 */
export function startPoolDeletionJob(deps: { db: Db; gate: PoolGate; kmeId: string; log: Logger; everyMs?: number; leads?: () => Promise<boolean> }): () => Promise<void> {
  return startBackgroundJob({
    leads: deps.leads,
    what: 'pool deletion',
    log: deps.log,
    everyMs: deps.everyMs ?? 2_000,
    step: async () => {
      for (const linkId of await duePoolDeletions(deps.db)) {
        const blocks = await deletePoolIfDue(deps.db, linkId, deps.kmeId);
        if (blocks === undefined) continue;
        deps.log.warn({ link: linkId, blocks }, 'pool deleted as scheduled by an operator: its unbound material is destroyed');
        await deps.gate.reload();
      }
    },
  });
}
