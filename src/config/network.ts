import type { Config } from './schema.js';

/**
 * Boot-time checks of the network part of a config: links, peers, remote SAEs and routes must describe a
 * network this KME can actually deliver over. `fail(field, why)` throws (it names the JSON pointer of the field).
 * Fills in each link's default primary (the lower of the two KME IDs, so both ends agree without saying so).
 */
export function checkNetwork(config: Config, fail: (field: string, why: string) => never): void {
  const self = config.kme_id;
  const peers = new Map<string, number>();
  config.peers.forEach((p, i) => {
    if (p.kme_id === self) fail(`/peers/${i}/kme_id`, `${self} is this KME, not a peer`);
    if (peers.has(p.kme_id)) fail(`/peers/${i}/kme_id`, `duplicate peer ${p.kme_id}`);
    peers.set(p.kme_id, i);
  });

  // A certificate name belongs to one principal of one role (SAE, peer KME, auditor, operator): a KME's certificate
  // never gets keys as an SAE, an SAE's never reads the custody log, and so on (src/auth/principals.ts).
  const cns = new Map<string, string>();
  const claim = (field: string, cn: string, who: string) => {
    const other = cns.get(cn);
    if (other) fail(field, `certificate CN ${cn} is also ${other}'s: a certificate name belongs to one principal in one role`);
    cns.set(cn, who);
  };
  config.saes.forEach((s, i) => claim(`/saes/${i}`, s.certificate_cn ?? s.id, `SAE ${s.id}`));
  config.peers.forEach((p, i) => claim(`/peers/${i}`, p.certificate_cn ?? p.kme_id, `peer KME ${p.kme_id}`));
  for (const [role, list] of [['auditor', config.auditors], ['operator', config.operators]] as const) {
    const ids = new Set<string>();
    list.forEach((p, i) => {
      if (ids.has(p.id)) fail(`/${role}s/${i}/id`, `duplicate ${role} ${p.id}`);
      ids.add(p.id);
      claim(`/${role}s/${i}`, p.certificate_cn ?? p.id, `${role} ${p.id}`);
    });
  }

  const linkIds = new Set<string>();
  const linkedPeers = new Set<string>();
  config.links.forEach((l, i) => {
    if (linkIds.has(l.link_id)) fail(`/links/${i}/link_id`, `duplicate link ${l.link_id}`);
    linkIds.add(l.link_id);
    const peer = l.peer_kme_id;
    if (peer === undefined || peer === self) {
      if (l.primary_kme_id !== undefined && l.primary_kme_id !== self) {
        fail(`/links/${i}/primary_kme_id`, `a loopback link's primary is this KME (${self})`);
      }
      l.peer_kme_id = undefined;
      l.primary_kme_id = self;
      return;
    }
    if (!peers.has(peer)) fail(`/links/${i}/peer_kme_id`, `${peer} is not in peers (add its URL there)`);
    linkedPeers.add(peer);
    l.primary_kme_id ??= self < peer ? self : peer;
    if (l.primary_kme_id !== self && l.primary_kme_id !== peer) {
      fail(`/links/${i}/primary_kme_id`, `must be ${self} or ${peer}, one of the link's two ends`);
    }
  });

  const localSaes = new Set(config.saes.map((s) => s.id));
  const routes = new Map<string, string>();
  config.network.routes.forEach((r, i) => {
    if (r.kme_id === self) fail(`/network/routes/${i}/kme_id`, `${self} is this KME`);
    if (peers.has(r.kme_id)) fail(`/network/routes/${i}/kme_id`, `${r.kme_id} is a peer: it is reached directly`);
    if (routes.has(r.kme_id)) fail(`/network/routes/${i}/kme_id`, `duplicate route to ${r.kme_id}`);
    if (!linkedPeers.has(r.via)) fail(`/network/routes/${i}/via`, `${r.via} is not a peer this KME has a link with`);
    routes.set(r.kme_id, r.via);
  });
  const remote = new Set<string>();
  config.network.remote_saes.forEach((r, i) => {
    if (localSaes.has(r.sae_id)) fail(`/network/remote_saes/${i}/sae_id`, `${r.sae_id} is an SAE of this KME`);
    if (remote.has(r.sae_id)) fail(`/network/remote_saes/${i}/sae_id`, `duplicate remote SAE ${r.sae_id}`);
    remote.add(r.sae_id);
    if (r.kme_id === self) fail(`/network/remote_saes/${i}/kme_id`, `${self} is this KME: list its SAEs under saes`);
    const hop = peers.has(r.kme_id) ? r.kme_id : routes.get(r.kme_id);
    if (!hop) fail(`/network/remote_saes/${i}/kme_id`, `no way to ${r.kme_id}: it is neither a peer nor in network.routes`);
    if (!linkedPeers.has(hop)) fail(`/network/remote_saes/${i}/kme_id`, `no link with ${hop}, the next hop towards ${r.kme_id}`);
  });
}
