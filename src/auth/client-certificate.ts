import type { TLSSocket } from 'node:tls';
import type { AuditorRegistry } from './auditor-registry.js';
import type { PeerRegistry } from './peer-registry.js';
import type { CertificateIdentity, SaeRegistry } from './sae-registry.js';

/** Who is calling, as far as the TLS layer and the registry can tell. */
export type Caller =
  | { ok: true; saeId: string; certSha256: string }
  | { ok: false; reason: string; certSha256?: string };

/**
 * Resolves the caller of a mutual-TLS connection. Verification happened in the handshake (against the configured
 * CA); the server lets unverified clients finish the handshake only so that they get an ETSI 401 body explaining
 * why, instead of a bare TLS alert. Cached per socket: with keep-alive, one lookup serves every request.
 */
export function callerOf(socket: TLSSocket, registry: SaeRegistry): Caller {
  const cached = cache.get(socket);
  if (cached) return cached;
  const caller = resolve(socket, registry);
  cache.set(socket, caller);
  return caller;
}

const cache = new WeakMap<TLSSocket, Caller>();

/** A caller of one role: who its verified certificate says it is, or why it is nobody of that role. */
type RoleCaller<Who> = ({ ok: true; certSha256: string } & Who) | { ok: false; reason: string; certSha256?: string };
type Registry<Who> = { identify(cert: CertificateIdentity & { extKeyUsage?: string[] }): Who | { reason: string } };

/** Resolves a caller against a role's registry, once per socket (`cache` is the role's). */
function roleOf<Who extends object>(
  socket: TLSSocket,
  registry: Registry<Who>,
  cache: WeakMap<TLSSocket, RoleCaller<Who>>,
  what: string,
): RoleCaller<Who> {
  const cached = cache.get(socket);
  if (cached) return cached;
  const verified = verifiedCertificate(socket, what);
  let caller: RoleCaller<Who>;
  if (!verified.ok) caller = verified;
  else {
    const found = registry.identify({ subjectCn: verified.cn, sha256: verified.certSha256, extKeyUsage: verified.extKeyUsage });
    caller = 'reason' in found ? { ok: false, reason: found.reason, certSha256: verified.certSha256 } : { ok: true, certSha256: verified.certSha256, ...found };
  }
  cache.set(socket, caller);
  return caller;
}

/** The peer KME calling over a mutual-TLS connection (the KME-to-KME API), cached per socket like `callerOf`. */
export type PeerCaller = RoleCaller<{ kmeId: string }>;
const peerCache = new WeakMap<TLSSocket, PeerCaller>();
export const peerOf = (socket: TLSSocket, registry: PeerRegistry): PeerCaller => roleOf(socket, registry, peerCache, 'a KME certificate');

/** The auditor calling the auditor API, cached per socket like `callerOf`. */
export type AuditorCaller = RoleCaller<{ auditorId: string }>;
const auditorCache = new WeakMap<TLSSocket, AuditorCaller>();
export const auditorOf = (socket: TLSSocket, registry: AuditorRegistry): AuditorCaller =>
  roleOf(socket, registry, auditorCache, "an auditor's certificate");

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

function resolve(socket: TLSSocket, registry: SaeRegistry): Caller {
  const verified = verifiedCertificate(socket, 'an SAE certificate');
  if (!verified.ok) return verified;
  const { cn, certSha256 } = verified;
  const saeId = registry.identify({ subjectCn: cn, sha256: certSha256 });
  if (!saeId) {
    return { ok: false, reason: `client certificate (CN=${cn ?? '?'}) is not registered as an SAE of this KME`, certSha256 };
  }
  return { ok: true, saeId, certSha256 };
}

function describeTlsError(code: string): string {
  switch (code) {
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
