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
export function startPoolLevelWatch(deps: { db: Db; topology: Topology; policies: PolicyBook; keySize: number; log: Logger; everyMs?: number; leads?: () => Promise<boolean> }): () => Promise<void> {
  const below = new Set<string>();
  return startBackgroundJob({
    leads: deps.leads,
    what: 'watching pool levels',
    log: deps.log,
    everyMs: deps.everyMs ?? 2_000,
    step: async () => {
      for (const { master, slave, link, minimum } of pairsWithMinimum(deps.topology, deps.policies)) {
        const keys = Math.floor(((await availableBlocks(deps.db, link.linkId)) * link.blockBits) / deps.keySize);
        const key = `${master}/${slave}`;
        const fields = { master, slave, link: link.linkId, keys, minimum };
        if (keys < minimum && !below.has(key)) {
          below.add(key);
          deps.log.warn(fields, 'key pool below the minimum the policy of this SAE pair sets');
        } else if (keys >= minimum && below.delete(key)) {
          deps.log.info(fields, 'key pool back at or above the minimum of this SAE pair');
        }
      }
    },
  });
}

/**
 * The pairs with a minimum pool level whose master is an SAE of this KME, each direction once, with the link whose
 * pool its keys come from now (pairs with no route now are left out: status and enc_keys say so). In memory only.
 */
export function pairsWithMinimum(
  topology: Topology,
  policies: Pick<PolicyBook, 'all'>,
): Array<{ master: string; slave: string; link: { linkId: string; blockBits: number }; minimum: number }> {
  const out = [];
  for (const p of policies.all()) {
    if (p.minPoolKeys === undefined) continue;
    for (const [master, slave] of [p.saes, [p.saes[1], p.saes[0]]] as Array<[string, string]>) {
      if (topology.kmeOf(master) !== topology.kmeId || topology.kmeOf(slave) === undefined) continue;
      try {
        out.push({ master, slave, link: planDelivery(topology, [slave]).material, minimum: p.minPoolKeys });
      } catch {
        continue;
      }
    }
  }
  return out;
}
