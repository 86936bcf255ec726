import type { DemoPki } from '../pki/dev-pki.js';
import { parseConfig } from './load.js';
import type { Config } from './schema.js';

/**
 * Builds the configs of a network of KMEs on one machine — the demo, the multi-KME tests and the bench — from a
 * short description: which KME serves which SAEs, and which links join them. Routes through trusted nodes are
 * found by breadth-first search over the links, so every KME can reach every other one.
 */
export interface NetworkSpec {
  kmes: Array<{ id: string; port: number; saes: string[]; hsm?: Config['hsm'] }>;
  /** One end: a loopback link of that KME. Two ends: a link between them (seeded simulators). */
  links: Array<{
    id: string;
    ends: [string] | [string, string];
    rateBitsPerSecond: number;
    seedFile?: string;
    qber?: number;
    /** Another device driver than the simulator, per end. */
    source?: (kmeId: string) => Record<string, unknown>;
  }>;
  pki: DemoPki;
  keys?: Partial<Config['keys']>;
  network?: Partial<Config['network']>;
  requests?: Partial<Config['requests']>;
  poolSize?: number;
  /** Where `from` reaches `to` (tests put a TCP proxy in between); default https://localhost:<port of to>. */
  peerUrl?: (from: string, to: string) => string | undefined;
}

export function networkConfigs(spec: NetworkSpec): Map<string, Config> {
  const adjacency = new Map<string, Set<string>>(spec.kmes.map((k) => [k.id, new Set()]));
  for (const l of spec.links) {
    if (l.ends.length === 2) {
      adjacency.get(l.ends[0])!.add(l.ends[1]);
      adjacency.get(l.ends[1])!.add(l.ends[0]);
    }
  }
  const byId = new Map(spec.kmes.map((k) => [k.id, k]));
  const configs = new Map<string, Config>();
  for (const kme of spec.kmes) {
    const peers = [...adjacency.get(kme.id)!];
    const hops = nextHops(kme.id, adjacency);
    const raw = {
      kme_id: kme.id,
      listen: { host: '127.0.0.1', port: kme.port },
      tls: { cert: spec.pki.kmes[kme.id]!.cert, key: spec.pki.kmes[kme.id]!.key, ca: spec.pki.ca },
      ...(spec.poolSize ? { database: { pool_size: spec.poolSize } } : {}),
      hsm: kme.hsm ?? { type: 'mock' },
      saes: kme.saes.map((id) => ({ id })),
      keys: spec.keys ?? {},
      requests: spec.requests ?? {},
      links: spec.links
        .filter((l) => (l.ends as string[]).includes(kme.id))
        .map((l) => ({
          link_id: l.id,
          ...(l.ends.length === 2 ? { peer_kme_id: l.ends[0] === kme.id ? l.ends[1] : l.ends[0] } : {}),
          source: l.source?.(kme.id) ?? {
            type: 'simulator',
            rate_bits_per_second: l.rateBitsPerSecond,
            ...(l.qber !== undefined ? { qber: l.qber } : {}),
            ...(l.seedFile ? { seed_file: l.seedFile } : {}),
          },
        })),
      peers: peers.map((p) => ({ kme_id: p, url: spec.peerUrl?.(kme.id, p) ?? `https://localhost:${byId.get(p)!.port}` })),
      network: {
        ...spec.network,
        remote_saes: spec.kmes.filter((k) => k.id !== kme.id).flatMap((k) => k.saes.map((sae) => ({ sae_id: sae, kme_id: k.id }))),
        routes: [...hops].filter(([to, via]) => to !== via).map(([to, via]) => ({ kme_id: to, via })),
      },
    };
    configs.set(kme.id, parseConfig(raw, `config of ${kme.id}`));
  }
  return configs;
}

/** For every KME reachable from `from`: the neighbour to send to first (breadth-first, so shortest paths). */
function nextHops(from: string, adjacency: Map<string, Set<string>>): Map<string, string> {
  const hops = new Map<string, string>();
  const queue: string[] = [];
  for (const n of adjacency.get(from)!) {
    hops.set(n, n);
    queue.push(n);
  }
  while (queue.length > 0) {
    const at = queue.shift()!;
    for (const n of adjacency.get(at)!) {
      if (n === from || hops.has(n)) continue;
      hops.set(n, hops.get(at)!);
      queue.push(n);
    }
  }
  return hops;
}
