import { readFileSync } from 'node:fs';
import type { SecureContextOptions, TlsOptions } from 'node:tls';
import { ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';

/**
 * Mutual-TLS server options for the ETSI API.
 * - TLS 1.2 or newer only (ETSI 014 §5.1).
 * - A client certificate is requested and verified against the configured CA. Clients that fail verification
 *   still complete the handshake so that they receive an ETSI 401 body saying why; they never reach a key
 *   (the ETSI plugin refuses every request whose socket is not `authorized`).
 * - Session resumption stays on (Node's defaults: TLS 1.3 tickets, TLS 1.2 session IDs): most ETSI clients
 *   connect afresh for every key, and a resumed handshake is far cheaper.
 * - Where the OpenSSL underneath supports it (Node 24: OpenSSL 3.5), the hybrid post-quantum group
 *   X25519MLKEM768 is offered first, protecting the key-delivery channel against harvest-now-decrypt-later.
 */
export function tlsServerOptions(tls: Config['tls']): TlsOptions & SecureContextOptions {
  return {
    cert: readPem(tls.cert, 'tls.cert'),
    key: readPem(tls.key, 'tls.key'),
    ca: readPem(tls.ca, 'tls.ca'),
    ...(tls.crl ? { crl: readPem(tls.crl, 'tls.crl') } : {}),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    ...postQuantumTls,
  };
}

function readPem(path: string, field: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
}

/**
 * The hybrid PQ group list when the OpenSSL underneath has ML-KEM (3.5 and newer), else undefined (Node's
 * default groups). Decided from the version rather than by trying `createSecureContext` with the list: a failed
 * attempt leaves an error on OpenSSL's error queue, and a later, unrelated WebCrypto call then fails with it.
 */
export const postQuantumGroups: string | undefined = (() => {
  const [major = 0, minor = 0] = (process.versions.openssl ?? '').split('.').map((n) => parseInt(n, 10));
  return major > 3 || (major === 3 && minor >= 5) ? 'X25519MLKEM768:X25519:prime256v1:secp384r1' : undefined;
})();

/** The groups option for every TLS server and client of the KME (spread into its options): empty without ML-KEM. */
export const postQuantumTls: { ecdhCurve?: string } = postQuantumGroups ? { ecdhCurve: postQuantumGroups } : {};
