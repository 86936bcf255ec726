import { collectDefaultMetrics, Registry } from 'prom-client';

/**
 * A Prometheus registry of one KME: never prom-client's global default registry, because one process may run
 * several KMEs (the demo, the tests), and each must export only its own figures. Every series carries
 * `kme_id`, so that a dashboard over both ends of a link (or over replicas) can tell the KMEs apart.
 *
 * Holds prom-client's default process metrics too (CPU, memory, event-loop lag, GC, handles), under their usual
 * names (`process_…`, `nodejs_…`): an operator's existing Node.js dashboards read them unchanged.
 */
export function createKmeRegistry(kmeId: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ kme_id: kmeId });
  collectDefaultMetrics({ register: registry });
  return registry;
}
