// A small keep-alive HTTPS client for the benchmark's own calls (readiness, pool status, fetching key_IDs),
// which are set-up, not measurement.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';

export interface Identity {
  cert: string; // PEM file paths
  key: string;
  ca: string;
}

/** TLS options for one SAE identity; also what autocannon's tlsOptions and the fresh-connection loop use. */
export function tlsFor(id: Identity) {
  return { cert: readFileSync(id.cert), key: readFileSync(id.key), ca: readFileSync(id.ca) };
}

export class JsonClient {
  private readonly agent: Agent;

  constructor(
    private readonly baseUrl: string,
    identity: Identity,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 16, ...tlsFor(identity) });
  }

  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        new URL(path, this.baseUrl),
        { method, agent: this.agent, headers: text ? { 'content-type': 'application/json' } : {}, timeout: 15_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const raw = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = raw;
            try {
              parsed = JSON.parse(raw);
            } catch {
              /* keep the raw text for the error message */
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(text);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
