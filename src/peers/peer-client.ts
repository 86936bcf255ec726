import { Agent, request } from 'node:https';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { checkServerIdentity } from 'node:tls';
import { matchesPin } from '../auth/principals.js';
import type { PeerConfig } from '../config/schema.js';

/** The TLS material a KME presents to its peers and checks them with. */
export interface PeerTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  ecdhCurve?: string;
}

/**
 * Mutual-TLS JSON client for one peer KME's KME-to-KME API, with keep-alive connections.
 *
 * The peer is authenticated twice: its certificate must chain to the configured CA and name its host (as any
 * HTTPS server), and it must be *that* KME: the CN (or the pinned fingerprint) configured for the peer. An SAE's
 * certificate, even from the same CA, is never taken for a KME.
 *
 * Failures are classified for the caller, because what it may do next depends on whether the peer could have
 * acted on the request:
 * - `PeerUnreachableError`: nothing reached the peer (connection refused, TLS failure): safe to retry or give up.
 * - `PeerTimeoutError`: the request may have been processed: ambiguous (relay: void it).
 * - `PeerRefusedError`: the peer answered with an error status and an Error body: it did not act.
 */
export class PeerClient {
  private agent: Agent;
  /** Agents of earlier TLS material: their requests in flight finish; close() ends them with the rest. */
  private readonly retired: Agent[] = [];

  constructor(
    readonly peer: PeerConfig,
    tls: PeerTls,
    private readonly defaultTimeoutMs: number,
  ) {
    this.agent = this.agentFor(tls);
  }

  /**
   * New requests present this certificate and trust this CA bundle (after a certificate rotation). Requests in
   * flight finish on the connections they have; those close when idle.
   */
  setTls(tls: PeerTls): void {
    this.retired.push(this.agent);
    this.agent = this.agentFor(tls);
  }

  private agentFor(tls: PeerTls): Agent {
    const peer = this.peer;
    const expectedCn = peer.certificate_cn ?? peer.kme_id;
    return new Agent({
      keepAlive: true,
      maxSockets: 32,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      minVersion: 'TLSv1.2',
      ...(tls.ecdhCurve ? { ecdhCurve: tls.ecdhCurve } : {}),
      checkServerIdentity: (host: string, cert: PeerCertificate) => {
        const hostError = checkServerIdentity(host, cert);
        if (hostError) return hostError;
        const cn = Array.isArray(cert.subject?.CN) ? cert.subject.CN[0] : cert.subject?.CN;
        if (cn !== expectedCn) return new Error(`peer certificate CN ${cn ?? '?'} is not ${expectedCn} (KME ${peer.kme_id})`);
        if (!matchesPin(peer.certificate_sha256, cert.fingerprint256)) {
          return new Error(`peer certificate of ${peer.kme_id} does not match its pinned fingerprint`);
        }
        return undefined;
      },
    });
  }

  get kmeId(): string {
    return this.peer.kme_id;
  }

  /** POSTs JSON and returns the parsed 2xx body. `timeoutMs` bounds the whole exchange. */
  post<T>(path: string, body: unknown, timeoutMs = this.defaultTimeoutMs): Promise<T> {
    return this.exchange('POST', path, Buffer.from(JSON.stringify(body)), timeoutMs);
  }

  /** GETs and returns the parsed 2xx body. `timeoutMs` bounds the whole exchange. */
  get<T>(path: string, timeoutMs = this.defaultTimeoutMs): Promise<T> {
    return this.exchange('GET', path, undefined, timeoutMs);
  }

  private exchange<T>(method: 'GET' | 'POST', path: string, payload: Buffer | undefined, timeoutMs: number): Promise<T> {
    const url = new URL(path, this.peer.url);
    return new Promise<T>((resolve, reject) => {
      let sent = false;
      const req = request(
        url,
        {
          method,
          agent: this.agent,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(new PeerTimeoutError(this.kmeId, `answer of ${this.kmeId} broke off: ${err.message}`)));
          res.on('end', () => {
            clearTimeout(timer);
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = undefined;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300 && parsed !== undefined) return resolve(parsed as T);
            const message = (parsed as { message?: unknown } | undefined)?.message;
            reject(new PeerRefusedError(this.kmeId, status, typeof message === 'string' ? message : `HTTP ${status}`));
          });
        },
      );
      // The socket's idle timeout only notices silence; this bounds the whole exchange.
      const timer = setTimeout(() => req.destroy(new Error('deadline')), timeoutMs);
      req.on('socket', (socket) => {
        const s = socket as TLSSocket;
        // A kept-alive socket is connected already; a new one counts once its handshake is done.
        if (s.connecting === false && !s.pending) sent = true;
        else s.once('secureConnect', () => (sent = true));
      });
      req.on('timeout', () => req.destroy(new Error('deadline')));
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (!sent || /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|certificate|CN |fingerprint|self.signed|unable to verify/i.test(`${err.code} ${err.message}`)) {
          reject(new PeerUnreachableError(this.kmeId, `${this.kmeId} unreachable: ${err.code ?? err.message}`));
        } else {
          reject(new PeerTimeoutError(this.kmeId, `${this.kmeId} did not answer in time (${err.code ?? err.message})`));
        }
      });
      req.end(payload);
    });
  }

  close(): void {
    for (const agent of [this.agent, ...this.retired]) agent.destroy();
  }
}

export class PeerError extends Error {
  constructor(
    readonly kmeId: string,
    message: string,
  ) {
    super(message);
  }
}
export class PeerUnreachableError extends PeerError {
  override name = 'PeerUnreachableError';
}
export class PeerTimeoutError extends PeerError {
  override name = 'PeerTimeoutError';
}
export class PeerRefusedError extends PeerError {
  override name = 'PeerRefusedError';
  constructor(
    kmeId: string,
    readonly status: number,
    message: string,
  ) {
    super(kmeId, `${kmeId} refused (${status}): ${message}`);
  }
}
