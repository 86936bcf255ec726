import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { normalizeSerial } from '../pki/serial.js';

/** What the trust of client certificates rests on: the CA bundle and, optionally, certificate revocation lists. */
export interface TrustMaterial {
  ca: Buffer;
  crl?: Buffer;
}

/** What `kms tls show` prints about the trust in force. */
export interface TrustSummary {
  cas: Array<{ subject: string; sha256: string; not_after: string }>;
  crls: Array<{ issuer: string; revoked: number; this_update: string; next_update?: string }>;
  reloads: number;
}

/**
 * Which client certificates a KME trusts, as of the last reload (docs/operators.md, "Certificates"). The TLS
 * handshake checks a new connection against the same CA bundle and CRLs (the server's secure context); this object
 * answers for connections opened *before* a reload: a certificate revoked since, or no longer issued by a trusted
 * CA, is refused on its next request (src/auth/client-certificate.ts asks on the first request of each connection
 * and again after every change). Until the first reload nothing is checked here: every connection was verified by
 * its handshake against what is in force.
 */
export class ClientTrust {
  private cas: X509Certificate[] = [];
  /** Revoked serial numbers, by the SHA-256 fingerprint of the CA that signed the CRL. */
  private revoked = new Map<string, Set<string>>();
  private summaryNow: TrustSummary = { cas: [], crls: [], reloads: 0 };

  /** Builds the trust of a starting KME (its handshakes enforce it; nothing to re-check yet). */
  static async load(material: TrustMaterial): Promise<ClientTrust> {
    const trust = new ClientTrust();
    (await trust.prepare(material, 0)).adopt();
    return trust;
  }

  /** Reloads counted since start: 0 means every open connection was verified against what is in force. */
  get reloads(): number {
    return this.summaryNow.reloads;
  }

  /**
   * Checks a new CA bundle and CRLs; returns what they are and the function that puts them in force. Throws, changing
   * nothing, when a certificate or a CRL does not parse, or a CRL is not signed by one of the CAs.
   */
  async prepare(material: TrustMaterial, reloads = this.summaryNow.reloads + 1): Promise<{ summary: TrustSummary; adopt: () => void }> {
    const cas = pemBlocks(material.ca, 'CERTIFICATE').map((pem, i) => {
      try {
        return new X509Certificate(pem);
      } catch (e) {
        throw new Error(`tls.ca: certificate ${i + 1} of the bundle does not parse (${(e as Error).message})`);
      }
    });
    if (cas.length === 0) throw new Error('tls.ca: no certificate in the bundle');
    const revoked = new Map<string, Set<string>>();
    const crls: TrustSummary['crls'] = [];
    const crlPems = material.crl ? pemBlocks(material.crl, 'X509 CRL') : [];
    // Loaded only for a KME that has CRLs: loading it costs a process about 20 MiB of resident memory (measured).
    const x509 = crlPems.length > 0 ? await loadX509() : undefined;
    for (const [i, pem] of crlPems.entries()) {
      let crl: InstanceType<NonNullable<typeof x509>['X509Crl']>;
      try {
        crl = new x509!.X509Crl(pem);
      } catch (e) {
        throw new Error(`tls.crl: CRL ${i + 1} does not parse (${(e as Error).message})`);
      }
      // By signature: two CAs may carry the same name.
      let issuer: X509Certificate | undefined;
      for (const ca of cas.filter((c) => sameName(c.subject, crl.issuer))) {
        if (await crl.verify({ publicKey: await new x509!.X509Certificate(ca.raw).publicKey.export() })) issuer = ca;
      }
      if (!issuer) throw new Error(`tls.crl: CRL ${i + 1} (issuer ${crl.issuer}) is not signed by a CA of tls.ca`);
      const serials = revoked.get(issuer.fingerprint256) ?? new Set<string>();
      for (const e of crl.entries) serials.add(normalizeSerial(e.serialNumber));
      revoked.set(issuer.fingerprint256, serials);
      crls.push({ issuer: crl.issuer, revoked: crl.entries.length, this_update: crl.thisUpdate.toISOString(), ...(crl.nextUpdate ? { next_update: crl.nextUpdate.toISOString() } : {}) });
    }
    const summary = {
      cas: cas.map((c) => ({ subject: c.subject.replace(/\n/g, ', '), sha256: c.fingerprint256, not_after: new Date(c.validTo).toISOString() })),
      crls,
      reloads,
    };
    return {
      summary,
      adopt: () => {
        this.cas = cas;
        this.revoked = revoked;
        this.summaryNow = summary;
      },
    };
  }

  summary(): TrustSummary {
    return this.summaryNow;
  }

  /** CRLs past their nextUpdate: the handshake then refuses every client of that CA (fail closed). */
  expiredCrls(now = Date.now()): string[] {
    return this.summaryNow.crls.filter((c) => c.next_update && Date.parse(c.next_update) < now).map((c) => c.issuer);
  }

  /** Why the certificate of a connection opened before the last reload is no longer trusted, or undefined. */
  refuses(socket: TLSSocket): string | undefined {
    if (this.summaryNow.reloads === 0 || typeof socket.getPeerCertificate !== 'function') return undefined;
    const raw = socket.getPeerCertificate()?.raw;
    if (!raw) return undefined; // no certificate: refused for that already
    const cert = new X509Certificate(raw);
    const issuer = this.cas.find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
    if (!issuer) return 'client certificate rejected: it is not issued by a CA this KME trusts (since the CA bundle was reloaded)';
    if (this.revoked.get(issuer.fingerprint256)?.has(normalizeSerial(cert.serialNumber))) return 'client certificate rejected: it has been revoked (CRL)';
    return undefined;
  }
}

function pemBlocks(pem: Buffer, label: string): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g');
  return pem.toString('utf8').match(re) ?? [];
}

/** Node prints names one RDN per line ("CN=x\nO=y"), @peculiar/x509 on one line ("CN=x, O=y"). */
function sameName(nodeName: string, x509Name: string): boolean {
  const norm = (s: string) => s.split(/\n|,\s*/).map((p) => p.trim()).filter(Boolean).sort().join(',');
  return norm(nodeName) === norm(x509Name);
}

/** @peculiar/x509, which needs the Reflect metadata polyfill loaded before it. */
async function loadX509() {
  await import('reflect-metadata');
  return import('@peculiar/x509');
}
