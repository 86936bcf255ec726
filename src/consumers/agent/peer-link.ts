import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { ConfigError } from '../../config/load.js';
import { JsonClient } from '../../http/json-client.js';
import { postQuantumGroups } from '../../tls.js';
import type { AgentConfig, BindingConfig } from './config.js';

/**
 * Agent ↔ agent messages, over mutual TLS with the agents' own certificates (config `tls`), each side checking that
 * the other's certificate CN is the binding's `peer.identity`. The master sends, the slave answers:
 *
 *   POST /agent/v1/bindings/{name}/offer     {key_ID}  → {answer: "staged" | "active" | "gone"}
 *   POST /agent/v1/bindings/{name}/activate  {key_ID}  → {answer: "active" | "gone"}
 *   POST /agent/v1/bindings/{name}/abort     {key_ID}  → {answer: "aborted"}
 *
 * Every message is idempotent, keyed by the key_ID: the master repeats one whose answer it did not get. "gone"
 * means the slave does not have (and cannot get) that key: the master abandons it. Only key_IDs cross this link.
 * A failure at the slave is a 503 with a message; a wrong certificate 403; an unknown binding 404.
 */
export type PeerStep = 'offer' | 'activate' | 'abort';
export type PeerAnswer = 'staged' | 'active' | 'gone' | 'aborted';

export interface PeerHandler {
  /** The CN the calling agent's certificate must carry. */
  readonly peerIdentity: string;
  handle(step: PeerStep, keyId: string): Promise<PeerAnswer>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PATH = /^\/agent\/v1\/bindings\/([A-Za-z0-9._-]{1,64})\/(offer|activate|abort)$/;

function readPem(path: string, field: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
}

/** The agent's listener: routes each message to its binding's handler after checking the caller's certificate. */
export function createPeerServer(config: AgentConfig, handlers: Map<string, PeerHandler>, log: Logger): Server {
  const server = createServer({
    cert: readPem(config.tls.cert, '/tls/cert'),
    key: readPem(config.tls.key, '/tls/key'),
    ca: readPem(config.tls.ca, '/tls/ca'),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    ...(postQuantumGroups ? { ecdhCurve: postQuantumGroups } : {}),
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const reply = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const route = req.method === 'POST' ? PATH.exec(req.url ?? '') : null;
    if (!route) return reply(404, { message: 'no such agent operation' });
    const [, name, step] = route as unknown as [string, string, PeerStep];
    const handler = handlers.get(name);
    if (!handler) return reply(404, { message: `no binding ${name} at this agent` });
    const cn = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
    if (cn !== handler.peerIdentity) {
      log.warn({ binding: name, caller: cn }, 'agent message refused: the caller is not this binding\'s peer agent');
      return reply(403, { message: `binding ${name} expects its peer agent ${handler.peerIdentity}` });
    }
    readJson(req, 4096).then(
      async (body) => {
        const keyId = (body as { key_ID?: unknown } | null)?.key_ID;
        if (typeof keyId !== 'string' || !UUID.test(keyId)) return reply(400, { message: 'key_ID: must be a UUID' });
        try {
          reply(200, { answer: await handler.handle(step, keyId) });
        } catch (err) {
          reply(503, { message: (err as Error).message });
        }
      },
      () => reply(400, { message: 'the body must be JSON of at most 4 KiB' }),
    );
  });
  return server;
}

function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) req.destroy(new Error('too large'));
      else chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

/** The master's side of the link to one binding's peer agent. */
export class PeerClient {
  private readonly http: JsonClient;
  private readonly base: string;

  constructor(config: AgentConfig, binding: BindingConfig) {
    const identity = binding.peer.identity;
    this.http = new JsonClient(
      { ca: config.tls.ca, cert: config.tls.cert, key: config.tls.key },
      { ca: '/tls/ca', cert: '/tls/cert', key: '/tls/key' },
      {
        timeoutMs: 30_000,
        // The usual host name check, and the certificate must be the peer agent's, not just any the CA signed.
        checkServerIdentity: (host: string, cert: PeerCertificate) =>
          checkServerIdentity(host, cert) ??
          (cert.subject?.CN === identity ? undefined : new Error(`the peer agent's certificate is ${cert.subject?.CN}, not ${identity}`)),
      },
    );
    this.base = `${binding.peer.url.replace(/\/+$/, '')}/agent/v1/bindings/${binding.name}`;
  }

  async send(step: PeerStep, keyId: string): Promise<PeerAnswer> {
    const body = await this.http.call<{ answer: PeerAnswer }>('POST', `${this.base}/${step}`, { key_ID: keyId });
    return body.answer;
  }

  close(): void {
    this.http.close();
  }
}
