import type { TLSSocket } from 'node:tls';
import type { Principals, Role } from './principals.js';

/** A caller of one role: who its verified certificate says it is, or why it is nobody of that role. */
export type RoleCaller<Who> = ({ ok: true; certSha256: string } & Who) | { ok: false; reason: string; certSha256?: string };

/** The SAE calling the ETSI 014 API. */
export type Caller = RoleCaller<{ saeId: string }>;
/** The peer KME calling the KME-to-KME API. */
export type PeerCaller = RoleCaller<{ kmeId: string }>;
/** The auditor calling the auditor API. */
export type AuditorCaller = RoleCaller<{ auditorId: string }>;
/** The operator calling the admin API. */
export type OperatorCaller = RoleCaller<{ operatorId: string }>;

/**
 * Resolves the caller of a mutual-TLS connection in one role. Verification happened in the handshake (against the
 * configured CA); the server lets unverified clients finish the handshake only so that they get an ETSI 401 body
 * explaining why, instead of a bare TLS alert. Cached per socket and per version of the registry: with keep-alive,
 * one lookup serves every request until an operator changes the registry or the KME reloads its CA bundle or CRLs,
 * and then the next request looks again (a suspended or revoked principal, or a revoked certificate, is refused on
 * connections it already holds open).
 */
function roleOf<Who extends object>(socket: TLSSocket, principals: Principals, role: Role, who: (id: string) => Who, what: string): RoleCaller<Who> {
  const cache = caches[role] as WeakMap<TLSSocket, { version: number; caller: RoleCaller<Who> }>;
  const cached = cache.get(socket);
  if (cached?.version === principals.version) return cached.caller;
  const verified = verifiedCertificate(socket, what);
  const distrusted = verified.ok ? principals.trust?.refuses(socket) : undefined;
  let caller: RoleCaller<Who>;
  if (!verified.ok) caller = verified;
  else if (distrusted) caller = { ok: false, reason: distrusted, certSha256: verified.certSha256 };
  else {
    const found = principals.identify(role, { subjectCn: verified.cn, sha256: verified.certSha256, extKeyUsage: verified.extKeyUsage });
    caller = 'reason' in found ? { ok: false, reason: found.reason, certSha256: verified.certSha256 } : { ok: true, certSha256: verified.certSha256, ...who(found.id) };
  }
  cache.set(socket, { version: principals.version, caller });
  return caller;
}

const caches: Record<Role, WeakMap<TLSSocket, unknown>> = { sae: new WeakMap(), peer: new WeakMap(), auditor: new WeakMap(), operator: new WeakMap() };

export const callerOf = (socket: TLSSocket, principals: Principals): Caller =>
  roleOf(socket, principals, 'sae', (saeId) => ({ saeId }), 'an SAE certificate');
export const peerOf = (socket: TLSSocket, principals: Principals): PeerCaller =>
  roleOf(socket, principals, 'peer', (kmeId) => ({ kmeId }), 'a KME certificate');
export const auditorOf = (socket: TLSSocket, principals: Principals): AuditorCaller =>
  roleOf(socket, principals, 'auditor', (auditorId) => ({ auditorId }), "an auditor's certificate");
export const operatorOf = (socket: TLSSocket, principals: Principals): OperatorCaller =>
  roleOf(socket, principals, 'operator', (operatorId) => ({ operatorId }), "an operator's certificate");

type Verified =
  | { ok: true; cn: string | undefined; certSha256: string; extKeyUsage: string[] }
  | { ok: false; reason: string; certSha256?: string };

/** The client certificate, if one was presented and it chains to the configured CA. */
function verifiedCertificate(socket: TLSSocket, what: string): Verified {
  if (typeof socket.getPeerCertificate !== 'function') return { ok: false, reason: 'not a TLS connection' };
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    return { ok: false, reason: `no client certificate presented: mutual TLS with ${what} is required` };
  }
  const certSha256 = cert.fingerprint256;
  if (!socket.authorized) {
    const why = String(socket.authorizationError ?? 'verification failed');
    return { ok: false, reason: `client certificate rejected: ${describeTlsError(why)}`, certSha256 };
  }
  const cn = Array.isArray(cert.subject?.CN) ? cert.subject.CN[0] : cert.subject?.CN;
  return { ok: true, cn, certSha256, extKeyUsage: cert.ext_key_usage ?? [] };
}

function describeTlsError(code: string): string {
  switch (code) {
    case 'CERT_REVOKED':
      return 'certificate has been revoked (CRL)';
    case 'CRL_HAS_EXPIRED':
      return "the CA's certificate revocation list has expired: the KME refuses its certificates until a fresh one is loaded";
    case 'CERT_HAS_EXPIRED':
      return 'certificate has expired';
    case 'CERT_NOT_YET_VALID':
      return 'certificate is not yet valid';
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return 'certificate is not issued by a CA this KME trusts';
    default:
      return code;
  }
}
