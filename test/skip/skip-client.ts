import { request, type RequestOptions } from 'node:https';
import type { ConnectionOptions } from 'node:tls';

/**
 * A SKIP client as a router is one (draft-cisco-skip): GET requests over TLS 1.3 with an external pre-shared key,
 * no certificates. A fresh connection per request (agent: false), so each request proves the PSK anew.
 */
export interface SkipAnswer {
  status: number;
  body: Record<string, unknown>;
}

export type SkipCredentials = (
  | { identity: string; psk: Buffer }
  /** A router with a client certificate instead (skip.tls): PEM contents. */
  | { cert: Buffer; key: Buffer; ca: Buffer }
) & {
  /** For the TLS 1.2 checks; default TLS 1.3 only. */
  maxVersion?: 'TLSv1.2' | 'TLSv1.3';
};

export function skipGet(url: string, who: SkipCredentials, path: string): Promise<SkipAnswer> {
  const { hostname, port } = new URL(url);
  // https.RequestOptions does not list pskCallback, though the TLS connection under it takes it.
  const options: RequestOptions & ConnectionOptions = {
    host: hostname,
    port: Number(port),
    path,
    method: 'GET',
    agent: false,
    minVersion: who.maxVersion ?? 'TLSv1.3',
    maxVersion: who.maxVersion ?? 'TLSv1.3',
    ...('psk' in who
      ? {
          ciphers: who.maxVersion === 'TLSv1.2' ? 'ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384' : 'TLS_AES_128_GCM_SHA256',
          pskCallback: () => ({ identity: who.identity, psk: who.psk }),
          // No certificate to check: the PSK authenticates the server too.
          checkServerIdentity: () => undefined,
        }
      : { cert: who.cert, key: who.key, ca: who.ca }),
  };
  return new Promise((resolve, reject) => {
    const req = request(
      options,
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
          } catch {
            reject(new Error(`not JSON (${res.statusCode}): ${text.slice(0, 200)}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}
