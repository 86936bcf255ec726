import { readFileSync } from 'node:fs';
import { Agent, request, type AgentOptions } from 'node:https';
import { ConfigError } from '../config/load.js';
import { postQuantumTls } from '../tls.js';

/** Where to find a CA and the client certificate to present. */
export interface ClientIdentity {
  ca: string;
  cert: string;
  key: string;
}

/** An answer other than 200 (status and the Error body's message), or no answer at all (status 0). */
export class HttpJsonError extends Error {
  override name = 'HttpJsonError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * JSON over mutual TLS, for the `kms` commands that call a KME's APIs with a person's certificate (an operator's,
 * an auditor's) and for the consumer agent: keep-alive, a deadline per call (10 s unless told), and errors that say
 * what happened in one line. Files that cannot be read are a ConfigError naming the flag that gave them.
 */
export class JsonClient {
  private readonly agent: Agent;
  private readonly timeoutMs: number;

  /** `opts.checkServerIdentity` adds a check of the server's certificate (e.g. a pinned CN) to the host name check. */
  constructor(
    identity: ClientIdentity,
    flags: Record<keyof ClientIdentity, string> = { ca: '--ca', cert: '--cert', key: '--key' },
    opts: { timeoutMs?: number; checkServerIdentity?: AgentOptions['checkServerIdentity'] } = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    const read = (which: keyof ClientIdentity) => {
      try {
        return readFileSync(identity[which]);
      } catch (e) {
        throw new ConfigError(`${flags[which]} ${identity[which]}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    };
    // Node 24 refuses `checkServerIdentity: undefined` (it must be a function when the key is present).
    const check = opts.checkServerIdentity ? { checkServerIdentity: opts.checkServerIdentity } : {};
    this.agent = new Agent({ ca: read('ca'), cert: read('cert'), key: read('key'), keepAlive: true, ...check, ...postQuantumTls });
  }

  /** Resolves with the JSON answer of a 200; rejects with HttpJsonError otherwise. */
  call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const origin = new URL(url).origin;
    return new Promise<T>((resolve, reject) => {
      const headers = payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {};
      const req = request(url, { method, agent: this.agent, headers, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            return reject(new HttpJsonError(status, `${origin} answered ${status} with no JSON`));
          }
          if (status === 200) resolve(json as T);
          else reject(new HttpJsonError(status, (json as { message?: string }).message ?? `status ${status}`));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs / 1000} s`)));
      req.on('error', (e) => reject(new HttpJsonError(0, `cannot reach ${origin}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
