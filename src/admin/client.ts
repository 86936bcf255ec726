import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/load.js';
import { JsonClient, type ClientIdentity } from '../http/json-client.js';

/**
 * The operator's side of the admin API: where the KME is and which certificate to present. Like Vault's
 * VAULT_ADDR / VAULT_CACERT / VAULT_CLIENT_CERT / VAULT_CLIENT_KEY, from flags or the environment (KMS_ADDR,
 * KMS_CACERT, KMS_CLIENT_CERT, KMS_CLIENT_KEY); with neither, the running demo's manifest (`--demo DIR`, default
 * ./.kms-demo) and its operator certificate, at the KME named by `--kme` (default the first).
 */
export interface AdminTarget extends ClientIdentity {
  url: string;
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

/** The admin API at one KME, with the operator's certificate. */
export class AdminClient {
  private readonly http: JsonClient;

  constructor(private readonly target: AdminTarget) {
    this.http = new JsonClient(target);
  }

  /** Calls the admin API; resolves with the JSON answer of a 200, rejects with HttpJsonError otherwise. */
  call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<T> {
    return this.http.call<T>(method, `${this.target.url}${path}`, body);
  }

  close(): void {
    this.http.close();
  }
}
