import type { TLSSocket } from 'node:tls';
/** TLS Web Server Authentication: every KME serves, so a KME's certificate carries it. */
export const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';

/**
 * Who may call this KME, and in which role: the registry that maps a verified client certificate to a principal. The
 * database holds it (migration 0007, src/store/principals.ts), seeded from the config file; this is its in-memory
 * image, which every request consults (a map lookup). `replace` swaps in a new image when the table changed, and
 * bumps `version`: connections cache who their certificate is per version, so a suspension or a revocation reaches
 * open keep-alive connections on their next request.
 */
export type Role = 'sae' | 'operator' | 'auditor' | 'peer';
export type PrincipalStatus = 'active' | 'suspended' | 'revoked';

export interface Principal {
  role: Role;
  /** SAE ID, operator or auditor name, or peer KME ID. */
  id: string;
  certificateCn: string;
  /** A pinned certificate: its SHA-256 fingerprint, upper-case hex without colons. */
  certificateSha256?: string;
  status: PrincipalStatus;
  /** SAEs only: the SAEs it may share keys with; undefined: any. */
  allowedPeers?: string[];
  tags: Record<string, string>;
  source: 'config' | 'admin';
  /** A config principal the config file no longer lists: admitted nowhere. */
  unlisted?: boolean;
}

/** What the TLS layer tells us about a verified client certificate. */
export interface CertificateIdentity {
  subjectCn: string | undefined;
  /** SHA-256 of the DER certificate, colon-separated upper-case hex (Node's `fingerprint256`). */
  sha256: string;
  extKeyUsage?: string[];
}

/** How each role is named in refusals, and what its certificates must (not) be. */
const ROLES: Record<Role, { name: string; unknown: string; serverAuth: 'required' | 'refused' | 'any' }> = {
  // An SAE's certificate is any client certificate of the CA; a CN names one principal, so never a KME's.
  sae: { name: 'SAE', unknown: 'is not registered as an SAE of this KME', serverAuth: 'any' },
  // Every KME serves, so a KME's certificate carries serverAuth: an SAE's client-only one is never taken for a KME.
  peer: { name: 'peer KME', unknown: 'is not a peer KME of this KME', serverAuth: 'required' },
  // Reading the custody log and administering the KME are roles of their own: a KME certificate never has them.
  auditor: { name: 'auditor', unknown: 'is not an auditor of this KME', serverAuth: 'refused' },
  operator: { name: 'operator', unknown: 'is not an operator of this KME', serverAuth: 'refused' },
};

/** A role as people read it: 'SAE', 'peer KME', 'auditor', 'operator'. */
export const roleName = (role: Role): string => ROLES[role].name;

export const normalizeFingerprint = (fp: string): string => fp.replace(/:/g, '').toUpperCase();

/** True when no fingerprint is pinned, or the certificate's SHA-256 fingerprint is the pinned one (any case, colons or not). */
export const matchesPin = (pin: string | undefined, sha256: string): boolean => !pin || normalizeFingerprint(pin) === normalizeFingerprint(sha256);

/** Whether a connection's certificate is still trusted after the CA bundle or CRLs were reloaded (src/auth/client-trust.ts). */
export interface ConnectionTrust {
  refuses(socket: TLSSocket): string | undefined;
}

export class Principals {
  private byCn = new Map<string, Principal>();
  private byRoleId = new Map<string, Principal>();
  private versionNo = 0;
  private trustNow: ConnectionTrust | undefined;

  constructor(principals: readonly Principal[] = []) {
    this.replace(principals);
  }

  /** Grows by one with every replace() and trust change: a cached identification of an older version must be made again. */
  get version(): number {
    return this.versionNo;
  }

  /** The trust in client certificates in force; set again after a reload, so that open connections are checked anew. */
  get trust(): ConnectionTrust | undefined {
    return this.trustNow;
  }

  set trust(trust: ConnectionTrust | undefined) {
    this.trustNow = trust;
    this.versionNo++;
  }

  /** Swaps in a new image of the registry. Throws (and keeps the old one) if two principals claim one CN or one ID. */
  replace(principals: readonly Principal[]): void {
    const byCn = new Map<string, Principal>();
    const byRoleId = new Map<string, Principal>();
    for (const p of principals) {
      const other = byCn.get(p.certificateCn);
      if (other) throw new Error(`certificate CN ${p.certificateCn} is claimed by ${describe(other)} and ${describe(p)}`);
      if (byRoleId.has(key(p.role, p.id))) throw new Error(`${describe(p)} is listed twice`);
      byCn.set(p.certificateCn, p);
      byRoleId.set(key(p.role, p.id), p);
    }
    [this.byCn, this.byRoleId] = [byCn, byRoleId];
    this.versionNo++;
  }

  /**
   * The principal of `role` this verified certificate authenticates as, or why it is none: not registered in that
   * role, a pinned fingerprint that differs, a certificate of the wrong kind, or a principal that is not active.
   */
  identify(role: Role, cert: CertificateIdentity): { id: string } | { reason: string } {
    const r = ROLES[role];
    const cn = `client certificate (CN=${cert.subjectCn ?? '?'})`;
    const p = cert.subjectCn === undefined ? undefined : this.byCn.get(cert.subjectCn);
    if (!p || p.role !== role || p.unlisted) return { reason: `${cn} ${r.unknown}` };
    if (!matchesPin(p.certificateSha256, cert.sha256)) return { reason: `${cn} ${r.unknown}: it is not the certificate pinned for ${r.name} ${p.id}` };
    const serverAuth = cert.extKeyUsage?.includes(SERVER_AUTH_OID) ?? false;
    if (r.serverAuth === 'required' && !serverAuth) return { reason: `${cn} is not a KME certificate (no serverAuth usage)` };
    if (r.serverAuth === 'refused' && serverAuth) return { reason: `${cn} is a KME certificate, not one of ${r.name} ${p.id}` };
    if (p.status !== 'active') return { reason: `${r.name} ${p.id} is ${p.status} by an operator` };
    return { id: p.id };
  }

  get(role: Role, id: string): Principal | undefined {
    return this.byRoleId.get(key(role, id));
  }

  /** A principal of this role and ID, whatever its status (listed in the config file, when it comes from there). */
  isRegistered(role: Role, id: string): boolean {
    const p = this.get(role, id);
    return p !== undefined && !p.unlisted;
  }

  list(role?: Role): Principal[] {
    return [...this.byRoleId.values()].filter((p) => role === undefined || p.role === role);
  }
}

const key = (role: Role, id: string) => `${role}\0${id}`;
const describe = (p: Principal) => `${roleName(p.role)} ${p.id}`;
