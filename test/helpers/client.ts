import { Agent, request } from 'node:https';
import { readFileSync } from 'node:fs';

/** A real ETSI 014 client over mutual TLS, one keep-alive agent per identity. */
export interface Identity {
  cert?: string; // PEM file paths
  key?: string;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
  text: string;
}

/**
 * The message for an assertion on a response's status. A successful body may hold key material, which must never
 * reach a test log (CI prints passing assertions' messages too): the body is shown only for an error answer, whose
 * ETSI Error body never carries a key.
 */
export function answered(res: Response, what = 'status'): string {
  return res.status >= 400 ? `${what}: ${res.status} ${res.text}` : `${what}: ${res.status}`;
}

export class EtsiClient {
  private readonly agent: Agent;

  constructor(
    readonly baseUrl: string,
    caPath: string,
    identity: Identity = {},
    opts: { keepAlive?: boolean; maxVersion?: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' } = {},
  ) {
    this.agent = new Agent({
      keepAlive: opts.keepAlive ?? true,
      maxSockets: 64,
      ca: readFileSync(caPath),
      cert: identity.cert ? readFileSync(identity.cert) : undefined,
      key: identity.key ? readFileSync(identity.key) : undefined,
      maxVersion: opts.maxVersion,
      minVersion: opts.minVersion,
    });
  }

  get(path: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.send('GET', path, undefined, headers);
  }

  post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return this.send('POST', path, text, { 'content-type': 'application/json', ...headers });
  }

  put(path: string, body: unknown): Promise<Response> {
    return this.send('PUT', path, JSON.stringify(body), { 'content-type': 'application/json' });
  }

  delete(path: string): Promise<Response> {
    return this.send('DELETE', path);
  }

  send(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Response> {
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, this.baseUrl), { method, agent: this.agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed, text });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
