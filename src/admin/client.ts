import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { ConfigError } from '../config/load.js';

/**
 * The operator's side of the admin API: where the KME is and which certificate to present. Like Vault's
 * VAULT_ADDR / VAULT_CACERT / VAULT_CLIENT_CERT / VAULT_CLIENT_KEY, from flags or the environment (KMS_ADDR,
 * KMS_CACERT, KMS_CLIENT_CERT, KMS_CLIENT_KEY); with neither, the running demo's manifest (`--demo DIR`, default
 * ./.kms-demo) and its operator certificate, at the KME named by `--kme` (default the first).
 */
export interface AdminTarget {
  url: string;
  ca: string;
  cert: string;
  key: string;
}

export interface TargetFlags {
  url?: string;
  ca?: string;
  cert?: string;
  key?: string;
  demo?: string;
  kme?: string;
}

export function adminTarget(flags: TargetFlags, env: NodeJS.ProcessEnv = process.env): AdminTarget {
  const url = flags.url ?? env.KMS_ADDR;
  if (url) {
    const need = { ca: flags.ca ?? env.KMS_CACERT, cert: flags.cert ?? env.KMS_CLIENT_CERT, key: flags.key ?? env.KMS_CLIENT_KEY };
    const names = { ca: '--ca (KMS_CACERT)', cert: '--cert (KMS_CLIENT_CERT)', key: '--key (KMS_CLIENT_KEY)' };
    for (const k of ['ca', 'cert', 'key'] as const) if (!need[k]) throw new ConfigError(`${names[k]} is required with --url (KMS_ADDR): an operator certificate`);
    if (!/^https:\/\//.test(url)) throw new ConfigError(`--url (KMS_ADDR) "${url}" must start with https://`);
    return { url: url.replace(/\/$/, ''), ca: need.ca!, cert: need.cert!, key: need.key! };
  }
  const file = `${flags.demo ?? '.kms-demo'}/demo.json`;
  let demo: { kmes: Array<{ id: string; url: string }>; ca: string; operators?: Record<string, { cert: string; key: string }> };
  try {
    demo = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`no --url (KMS_ADDR) given, and cannot read ${file} (is the demo running? npm start): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const kme = flags.kme ? demo.kmes.find((k) => k.id === flags.kme) : demo.kmes[0];
  if (!kme) throw new ConfigError(`--kme ${flags.kme}: the demo has ${demo.kmes.map((k) => k.id).join(', ')}`);
  const operator = Object.values(demo.operators ?? {})[0];
  if (!operator) throw new ConfigError(`${file} names no operator certificate: restart the demo with this version`);
  return { url: kme.url, ca: demo.ca, ...operator };
}

/** An answer of the admin API other than 200: its status and the Error body's message. */
export class AdminApiError extends Error {
  override name = 'AdminApiError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class AdminClient {
  private readonly agent: Agent;

  constructor(private readonly target: AdminTarget) {
    const read = (what: string, file: string) => {
      try {
        return readFileSync(file);
      } catch (e) {
        throw new ConfigError(`${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    };
    this.agent = new Agent({ ca: read('--ca', target.ca), cert: read('--cert', target.cert), key: read('--key', target.key), keepAlive: true });
  }

  get url(): string {
    return this.target.url;
  }

  /** Calls the admin API; resolves with the JSON answer of a 200, rejects with AdminApiError otherwise. */
  call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = request(
        `${this.target.url}${path}`,
        { method, agent: this.agent, headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              return reject(new AdminApiError(res.statusCode ?? 0, `${this.target.url} answered ${res.statusCode} with no JSON`));
            }
            if (res.statusCode === 200) resolve(json as T);
            else reject(new AdminApiError(res.statusCode ?? 0, (json as { message?: string }).message ?? `status ${res.statusCode}`));
          });
        },
      );
      req.on('error', (e) => reject(new AdminApiError(0, `cannot reach ${this.target.url}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
