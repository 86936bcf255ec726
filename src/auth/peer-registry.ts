import type { PeerConfig } from '../config/schema.js';
import { matchesPin, type CertificateIdentity } from './sae-registry.js';

/** TLS Web Server Authentication: every KME serves, so a KME's certificate carries it. */
export const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';

/**
 * Maps a verified client certificate to a peer KME of the configuration (DESIGN §6: peers are a role of their
 * own). A peer is known by its certificate CN (default: its KME ID), optionally pinned to one fingerprint, and its
 * certificate must be a server certificate too: an SAE's client-only certificate is never taken for a KME, even
 * one from the same CA with the same name. The config check refuses a CN shared by an SAE and a peer, so a KME
 * certificate is never taken for an SAE either.
 */
export class PeerRegistry {
  private readonly byCn = new Map<string, PeerConfig>();

  constructor(peers: readonly PeerConfig[]) {
    for (const p of peers) this.byCn.set(p.certificate_cn ?? p.kme_id, p);
  }

  /** The peer KME ID, or a reason why this certificate is not a peer's. */
  identify(cert: CertificateIdentity & { extKeyUsage?: string[] }): { kmeId: string } | { reason: string } {
    const peer = cert.subjectCn === undefined ? undefined : this.byCn.get(cert.subjectCn);
    if (!peer) return { reason: `client certificate (CN=${cert.subjectCn ?? '?'}) is not a peer KME of this KME` };
    if (!matchesPin(peer.certificate_sha256, cert.sha256)) {
      return { reason: `client certificate of ${peer.kme_id} does not match its pinned fingerprint` };
    }
    if (!cert.extKeyUsage?.includes(SERVER_AUTH_OID)) {
      return { reason: `client certificate CN=${cert.subjectCn} is not a KME certificate (no serverAuth usage)` };
    }
    return { kmeId: peer.kme_id };
  }
}
