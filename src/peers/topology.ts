import type { Config, PeerConfig } from '../config/schema.js';

/** One link as this KME sees it. */
export interface LinkInfo {
  linkId: string;
  /** The KME at the other end; undefined for a loopback link. */
  peerKmeId: string | undefined;
  /** Which end reads new material first and announces it to the other (see src/sources/link-source.ts). */
  role: 'primary' | 'secondary' | 'loopback';
  blockBits: number;
}

/**
 * Where every SAE of the network is and how to get there, from the validated config (src/config/network.ts
 * checked it at boot): local SAEs, remote SAEs with their KME, the next hop towards each KME, and the link
 * that carries material to each peer. Immutable but for the local SAEs, which operators enroll while the KME runs
 * (`isLocalSae`: the registry of principals); cheap lookups only.
 */
export class Topology {
  readonly kmeId: string;
  private readonly isLocalSae: (saeId: string) => boolean;
  private readonly remoteSaes = new Map<string, string>();
  private readonly nextHops = new Map<string, string>();
  private readonly peers = new Map<string, PeerConfig>();
  private readonly linksById = new Map<string, LinkInfo>();
  private readonly linkToPeer = new Map<string, LinkInfo>();
  private readonly loopbackLink: LinkInfo | undefined;

  /** `isLocalSae`: whether an SAE ID is registered at this KME; default: listed in the config's saes. */
  constructor(config: Config, isLocalSae?: (saeId: string) => boolean) {
    this.kmeId = config.kme_id;
    const configured = new Set(config.saes.map((s) => s.id));
    this.isLocalSae = isLocalSae ?? ((id) => configured.has(id));
    for (const p of config.peers) {
      this.peers.set(p.kme_id, p);
      this.nextHops.set(p.kme_id, p.kme_id);
    }
    for (const r of config.network.routes) this.nextHops.set(r.kme_id, r.via);
    for (const r of config.network.remote_saes) this.remoteSaes.set(r.sae_id, r.kme_id);
    let loopback: LinkInfo | undefined;
    for (const l of config.links) {
      const peer = l.peer_kme_id;
      const info: LinkInfo = {
        linkId: l.link_id,
        peerKmeId: peer,
        role: peer === undefined ? 'loopback' : l.primary_kme_id === this.kmeId ? 'primary' : 'secondary',
        blockBits: config.keys.key_size,
      };
      this.linksById.set(l.link_id, info);
      if (peer === undefined) loopback ??= info;
      else if (!this.linkToPeer.has(peer)) this.linkToPeer.set(peer, info); // the first link to a peer carries keys
    }
    this.loopbackLink = loopback;
  }

  /** The KME an SAE is attached to, or undefined for an SAE nobody configured. */
  kmeOf(saeId: string): string | undefined {
    return this.isLocalSae(saeId) ? this.kmeId : this.remoteSaes.get(saeId);
  }

  isLocal(saeId: string): boolean {
    return this.isLocalSae(saeId);
  }

  /** The peer to send to for a KME (itself when adjacent); undefined when unreachable or local. */
  nextHop(kmeId: string): string | undefined {
    return this.nextHops.get(kmeId);
  }

  /** The link whose material reaches `peerKmeId` directly. */
  linkTo(peerKmeId: string): LinkInfo | undefined {
    return this.linkToPeer.get(peerKmeId);
  }

  /** The loopback link that serves pairs of this KME's own SAEs, if one is configured. */
  get loopback(): LinkInfo | undefined {
    return this.loopbackLink;
  }

  link(linkId: string): LinkInfo | undefined {
    return this.linksById.get(linkId);
  }

  get links(): LinkInfo[] {
    return [...this.linksById.values()];
  }

  peer(kmeId: string): PeerConfig | undefined {
    return this.peers.get(kmeId);
  }

  get peerList(): PeerConfig[] {
    return [...this.peers.values()];
  }
}
