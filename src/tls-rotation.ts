import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContextOptions, type TlsOptions } from 'node:tls';
import { auditBody, insertAuditSql } from './audit/event.js';
import type { ClientTrust, TrustSummary } from './auth/client-trust.js';
import type { Principals } from './auth/principals.js';
import type { Config } from './config/schema.js';
import { badRequest } from './errors.js';
import type { Logger } from './log.js';
import type { PeerTls } from './peers/peer-client.js';
import type { Db } from './store/db.js';
import type { ChangeActor } from './store/principals.js';
import { tlsServerOptions } from './tls.js';

/** What `kms tls show` and `kms tls reload` answer. */
export interface TlsView {
  server_certificate: { subject: string; sha256: string; not_after: string };
  trust: TrustSummary;
  reloaded_at?: string;
}

/**
 * Certificate rotation without a restart (SIGHUP, or `kms tls reload` through the admin API): reads the server
 * certificate and key, the CA bundle and the CRLs again from the files the config names, and puts them in force
 * when all of them are good — new connections get the new secure context, and connections already open are checked
 * against the new CA bundle and CRLs on their next request (src/auth/client-trust.ts), and the KME presents the new
 * certificate to its peers from its next connection to them. Anything wrong (a file
 * missing, a key that is not the certificate's, a CRL not signed by a CA) refuses the reload with the reason and
 * leaves what was in force. Each reload is a `tls` custody event.
 */
export class TlsRotation {
  private serverCert: X509Certificate;
  private reloadedAt: Date | undefined;

  constructor(
    private readonly deps: {
      tls: Config['tls'];
      server: { setSecureContext(options: SecureContextOptions): void };
      principals: Principals;
      trust: ClientTrust;
      /** The clients this KME calls its peers with: they present the new certificate from their next connection. */
      peerClients: Iterable<{ setTls(tls: PeerTls): void }>;
      db: Db;
      log: Logger;
    },
    initial: TlsOptions & SecureContextOptions,
  ) {
    this.serverCert = new X509Certificate(initial.cert as Buffer);
    deps.principals.trust = deps.trust;
  }

  show(): TlsView {
    return {
      server_certificate: { subject: this.serverCert.subject.replace(/\n/g, ', '), sha256: this.serverCert.fingerprint256, not_after: new Date(this.serverCert.validTo).toISOString() },
      trust: this.deps.trust.summary(),
      ...(this.reloadedAt ? { reloaded_at: this.reloadedAt.toISOString() } : {}),
    };
  }

  async reload(by: ChangeActor, why: string): Promise<TlsView> {
    let next: TlsOptions & SecureContextOptions;
    let cert: X509Certificate;
    let trust: { summary: TrustSummary; adopt: () => void };
    try {
      next = tlsServerOptions(this.deps.tls);
      createSecureContext(next); // a key that is not the certificate's fails here, before anything changes
      cert = new X509Certificate(next.cert as Buffer);
      trust = await this.deps.trust.prepare({ ca: next.ca as Buffer, ...(next.crl ? { crl: next.crl as Buffer } : {}) });
    } catch (err) {
      const reason = `the TLS material was not reloaded (what was in force stays): ${(err as Error).message}`;
      this.deps.log.error({ by: by.actor }, reason);
      throw badRequest(reason);
    }
    // Audited first (no custody event, no change), then put in force all at once.
    const sha256 = cert.fingerprint256;
    const detail = { why, server_certificate_sha256: sha256, cas: trust.summary.cas.map((c) => c.sha256), crls: trust.summary.crls };
    await this.deps.db.query(insertAuditSql(1), [[auditBody({ operation: 'tls', outcome: 'ok', ...by, detail })]]);
    trust.adopt();
    this.deps.server.setSecureContext(next);
    for (const client of this.deps.peerClients) {
      client.setTls({ ca: next.ca as Buffer, cert: next.cert as Buffer, key: next.key as Buffer, ...(next.ecdhCurve ? { ecdhCurve: next.ecdhCurve } : {}) });
    }
    this.deps.principals.trust = this.deps.trust; // open connections: checked again on their next request
    this.serverCert = cert;
    this.reloadedAt = new Date();
    const view = this.show();
    const expired = this.deps.trust.expiredCrls();
    if (expired.length) this.deps.log.warn({ issuers: expired }, 'a CRL is past its nextUpdate: the handshake refuses every client certificate of its CA until a fresh CRL is loaded');
    this.deps.log.info({ by: by.actor, why, server_certificate: sha256, cas: view.trust.cas.length, crls: view.trust.crls.length }, 'TLS material reloaded');
    return view;
  }
}
