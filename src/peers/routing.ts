import { badRequest, EtsiMessage, unavailable } from '../errors.js';
import type { LinkInfo, Topology } from './topology.js';

/**
 * How a key reaches its slaves (docs/network.md): the material comes from one link, and every other KME that must
 * hold the key gets it hop by hop, one-time-pad encrypted with each hop's own link material (trusted-node relay,
 * ETSI GS QKD 014 Annex B).
 */
export interface DeliveryPlan {
  /** Where the key material comes from: the link towards the path slave's KME, or the loopback link. */
  material: LinkInfo;
  /** Slaves attached to this KME. */
  localSlaves: string[];
  /** The next hops and the slaves each must reach; `direct` when that peer shares the material link. */
  hops: Hop[];
}

export interface Hop {
  peer: string;
  link: LinkInfo;
  targets: string[];
  /** The peer holds the material already (the key's own link): it gets positions, not an encrypted value. */
  direct: boolean;
}

/**
 * Routes the slaves of one request at this KME. `exclude` are KMEs the key came through (a relay node never sends
 * a key back). Throws a 400 for an SAE nobody configured, a 503 when no link or route can carry the key, and — for
 * `qkms_route_type` — 400 when the route the caller insists on is impossible.
 */
export function planDelivery(
  topology: Topology,
  slaves: string[],
  opts: { material?: LinkInfo; exclude?: string[]; routeType?: 'direct' | 'indirect' } = {},
): DeliveryPlan {
  const localSlaves: string[] = [];
  const byPeer = new Map<string, string[]>();
  let firstRemote: { peer: string; kme: string } | undefined;
  for (const sae of slaves) {
    const kme = topology.kmeOf(sae);
    if (kme === undefined) throw badRequest(`slave SAE ${sae} is not registered at this KME or in its network`);
    if (kme === topology.kmeId) {
      localSlaves.push(sae);
      continue;
    }
    const peer = topology.nextHop(kme);
    if (peer === undefined || opts.exclude?.includes(peer)) throw unavailable(`no route from ${topology.kmeId} to ${kme} (SAE ${sae})`);
    firstRemote ??= { peer, kme };
    byPeer.set(peer, [...(byPeer.get(peer) ?? []), sae]);
  }

  let material = opts.material;
  if (!material) {
    const pathSlave = slaves[0]!;
    if (topology.isLocal(pathSlave)) {
      material = topology.loopback;
      if (!material) {
        throw unavailable(`no QKD link serves pairs of SAEs of ${topology.kmeId}: configure a loopback link for them`);
      }
    } else {
      const peer = topology.nextHop(topology.kmeOf(pathSlave)!)!;
      material = topology.linkTo(peer);
      if (!material) throw unavailable(`no QKD link from ${topology.kmeId} to ${peer}`);
    }
  }

  if (opts.routeType) checkRouteType(topology, slaves, opts.routeType);

  const hops: Hop[] = [...byPeer].map(([peer, targets]) => {
    const link = topology.linkTo(peer);
    if (!link) throw unavailable(`no QKD link from ${topology.kmeId} to ${peer}`);
    return { peer, link, targets, direct: material!.peerKmeId === peer };
  });
  return { material, localSlaves, hops };
}

/**
 * `qkms_route_type` (a mandatory extension when the caller insists): `direct` — every slave's KME shares a link
 * with this one (or is this one); `indirect` — the key may pass trusted nodes (always possible when routed).
 */
function checkRouteType(topology: Topology, slaves: string[], routeType: 'direct' | 'indirect'): void {
  if (routeType === 'indirect') return;
  for (const sae of slaves) {
    const kme = topology.kmeOf(sae)!;
    if (kme !== topology.kmeId && topology.nextHop(kme) !== kme) {
      throw badRequest(EtsiMessage.extensionMandatoryUnmet, [
        { qkms_route_type: `direct is impossible: ${sae} is behind ${kme}, reached through ${topology.nextHop(kme)}` },
      ]);
    }
  }
}
