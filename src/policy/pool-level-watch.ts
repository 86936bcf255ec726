import type { Logger } from '../log.js';
import { startBackgroundJob } from '../lifecycle/background-job.js';
import { planDelivery } from '../peers/routing.js';
import type { Topology } from '../peers/topology.js';
import type { Db } from '../store/db.js';
import { availableBlocks } from '../store/pool.js';
import type { PolicyBook } from './policy-book.js';

/**
 * Watches the pools SAE pairs with a minimum pool level draw from (`min_pool_keys`), for masters of this KME: a log
 * line when a pool falls below a pair's minimum, and one when it is back (once per crossing, not on every pass).
 * The status answer of the pair warns as well (src/keys/key-service.ts).
 */
export function startPoolLevelWatch(deps: { db: Db; topology: Topology; policies: PolicyBook; keySize: number; log: Logger; everyMs?: number }): () => Promise<void> {
  const below = new Set<string>();
  return startBackgroundJob({
    what: 'watching pool levels',
    log: deps.log,
    everyMs: deps.everyMs ?? 2_000,
    step: async () => {
      for (const p of deps.policies.all()) {
        if (p.minPoolKeys === undefined) continue;
        for (const [master, slave] of [p.saes, [p.saes[1], p.saes[0]]] as Array<[string, string]>) {
          if (deps.topology.kmeOf(master) !== deps.topology.kmeId || deps.topology.kmeOf(slave) === undefined) continue;
          let link;
          try {
            link = planDelivery(deps.topology, [slave]).material;
          } catch {
            continue; // no route to the slave now: status and enc_keys say so
          }
          const keys = Math.floor(((await availableBlocks(deps.db, link.linkId)) * link.blockBits) / deps.keySize);
          const key = `${master}/${slave}`;
          const fields = { master, slave, link: link.linkId, keys, minimum: p.minPoolKeys };
          if (keys < p.minPoolKeys && !below.has(key)) {
            below.add(key);
            deps.log.warn(fields, 'key pool below the minimum the policy of this SAE pair sets');
          } else if (keys >= p.minPoolKeys && below.delete(key)) {
            deps.log.info(fields, 'key pool back at or above the minimum of this SAE pair');
          }
        }
      }
    },
  });
}
