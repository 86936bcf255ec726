import type { AuditorEntry } from '../config/schema.js';
import { SERVER_AUTH_OID } from './peer-registry.js';
import { matchesPin, type CertificateIdentity } from './sae-registry.js';

/**
 * Maps a verified client certificate to an auditor of the configuration: the only role the auditor API (/audit/v1)
 * admits. An auditor is known by its certificate CN (default: its ID), optionally pinned to one fingerprint. The
 * config check refuses a CN shared with an SAE or a peer KME, and a certificate with the serverAuth usage (a KME's)
 * is refused here whatever its name: an SAE or KME certificate never reads the log.
 */
export class AuditorRegistry {
  private readonly byCn = new Map<string, AuditorEntry>();

  constructor(auditors: readonly AuditorEntry[]) {
    for (const a of auditors) this.byCn.set(a.certificate_cn ?? a.id, a);
  }

  identify(cert: CertificateIdentity & { extKeyUsage?: string[] }): { auditorId: string } | { reason: string } {
    const entry = cert.subjectCn === undefined ? undefined : this.byCn.get(cert.subjectCn);
    if (!entry) return { reason: `client certificate (CN=${cert.subjectCn ?? '?'}) is not an auditor of this KME` };
    if (!matchesPin(entry.certificate_sha256, cert.sha256)) return { reason: `client certificate of auditor ${entry.id} does not match its pinned fingerprint` };
    if (cert.extKeyUsage?.includes(SERVER_AUTH_OID)) return { reason: `client certificate CN=${cert.subjectCn} is a KME certificate, not an auditor's` };
    return { auditorId: entry.id };
  }
}
