import type { SaeEntry } from '../config/schema.js';

/** What the TLS layer tells us about a verified client certificate. */
export interface CertificateIdentity {
  subjectCn: string | undefined;
  /** SHA-256 of the DER certificate, colon-separated upper-case hex (Node's `fingerprint256`). */
  sha256: string;
}

/**
 * Maps a verified client certificate to an SAE ID. The certificate chain has already been verified against the
 * configured CA; this decides *who* it is. A certificate that maps to no registered SAE gets nothing.
 *
 * Implementations: `ConfigSaeRegistry` (SAEs listed in the config file). Operator enrollment and revocation
 * (a later issue) provide a database-backed one with the same contract.
 */
export interface SaeRegistry {
  /** The SAE ID this certificate authenticates as, or undefined. Must be cheap: called once per TLS session. */
  identify(cert: CertificateIdentity): string | undefined;
  /** Whether an SAE ID is registered here (the slave and additional slaves of a request must be). */
  has(saeId: string): boolean;
}

export class ConfigSaeRegistry implements SaeRegistry {
  private readonly byCn = new Map<string, SaeEntry>();
  private readonly ids = new Set<string>();

  constructor(entries: readonly SaeEntry[]) {
    for (const e of entries) {
      const cn = e.certificate_cn ?? e.id;
      if (this.byCn.has(cn)) throw new Error(`two SAEs claim certificate CN ${cn}`);
      this.byCn.set(cn, e);
      this.ids.add(e.id);
    }
  }

  identify(cert: CertificateIdentity): string | undefined {
    if (!cert.subjectCn) return undefined;
    const entry = this.byCn.get(cert.subjectCn);
    if (!entry) return undefined;
    if (!matchesPin(entry.certificate_sha256, cert.sha256)) return undefined;
    return entry.id;
  }

  has(saeId: string): boolean {
    return this.ids.has(saeId);
  }
}

const normalizeFingerprint = (fp: string) => fp.replace(/:/g, '').toUpperCase();

/** True when no fingerprint is pinned, or the certificate's SHA-256 fingerprint is the pinned one (any case, colons or not). */
export const matchesPin = (pin: string | undefined, sha256: string): boolean => !pin || normalizeFingerprint(pin) === normalizeFingerprint(sha256);
