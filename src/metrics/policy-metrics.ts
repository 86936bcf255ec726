import { Gauge, type Registry } from 'prom-client';
import type { PolicyBook } from '../policy/policy-book.js';
import { pairsWithMinimum } from '../policy/pool-level-watch.js';
import type { Topology } from '../peers/topology.js';

/**
 * `qkms_pool_minimum_keys{link_id}`: the largest minimum pool level (policy `min_pool_keys`) among the SAE pairs
 * whose masters are at this KME and draw their keys from the link now. Series have the labels of
 * `qkms_pool_available_keys`, so an alert compares the two directly. Computed from memory at scrape time.
 */
export function registerPolicyMetrics(registry: Registry, deps: { topology: Topology; policies: Pick<PolicyBook, 'all'> }): void {
  new Gauge({
    name: 'qkms_pool_minimum_keys',
    help: 'Largest minimum pool level (keys, policy min_pool_keys) that an SAE pair drawing from the link sets; absent when no pair sets one.',
    labelNames: ['link_id'],
    registers: [registry],
    collect() {
      this.reset();
      const byLink = new Map<string, number>();
      for (const p of pairsWithMinimum(deps.topology, deps.policies)) byLink.set(p.link.linkId, Math.max(byLink.get(p.link.linkId) ?? 0, p.minimum));
      for (const [linkId, minimum] of byLink) this.labels(linkId).set(minimum);
    },
  });
}
