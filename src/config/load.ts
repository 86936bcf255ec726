import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Value } from 'typebox/value';
import { ConfigSchema, MockHsmSchema, Pkcs11HsmSchema, SOURCE_SCHEMAS, type Config, type KeyLimits } from './schema.js';
import { checkNetwork } from './network.js';

/** A configuration problem, worded for the operator: which file, which field, what is wrong. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads, defaults and validates a JSON config file. Relative paths inside it resolve against its folder. */
export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  const config = parseConfig(raw, path);
  const base = dirname(resolve(path));
  for (const field of ['cert', 'key', 'ca'] as const) config.tls[field] = resolve(base, config.tls[field]);
  if (config.hsm.type === 'pkcs11' && config.hsm.pin_file) config.hsm.pin_file = resolve(base, config.hsm.pin_file);
  for (const router of config.skip?.routers ?? []) if (router.psk_file) router.psk_file = resolve(base, router.psk_file);
  if (config.skip?.tls) for (const field of ['cert', 'key', 'ca'] as const) config.skip.tls[field] = resolve(base, config.skip.tls[field]);
  for (const link of config.links) {
    const src = link.source;
    if (src.type === 'simulator' && src.seed_file) src.seed_file = resolve(base, src.seed_file);
    if (src.type === 'etsi014') for (const f of ['ca', 'cert', 'key'] as const) src[f] = resolve(base, src[f]);
    if (src.type === 'file') src.directory = resolve(base, src.directory);
  }
  return config;
}

/** Validates an already-parsed config object. `origin` names it in error messages. */
export function parseConfig(raw: unknown, origin = 'config'): Config {
  if (raw && typeof raw === 'object' && 'source' in raw && !('links' in raw)) {
    // The one-link form of the first releases: say what replaced it instead of "additional property".
    throw new ConfigError(
      `${origin} is invalid:\n  /source: the key source now belongs to a link: write "links": [{ "link_id": "…", "source": { … } }] (see README)`,
    );
  }
  const withDefaults = Value.Default(ConfigSchema, Value.Clone(raw));
  const errors = [...Value.Errors(ConfigSchema, withDefaults)];
  if (errors.length > 0) {
    const lines = [...new Set(errors.flatMap((e) => describeError(e, withDefaults)))].slice(0, 12);
    throw new ConfigError(`${origin} is invalid:\n${lines.join('\n')}`);
  }
  const config = withDefaults as Config;
  config.links ??= [{ link_id: `${config.kme_id}-loopback`, max_blocks_per_batch: 16_384, source: Value.Default(SOURCE_SCHEMAS.simulator, { type: 'simulator' }) as Config['links'][number]['source'] }];
  checkKeyLimits(config.keys, origin);
  // Node refuses to start a server whose header limit exceeds its request limit; say so in the config's terms.
  if (config.listen.headers_timeout_ms > config.listen.request_timeout_ms) {
    throw new ConfigError(
      `${origin} is invalid:\n  /listen/headers_timeout_ms: must not exceed request_timeout_ms (${config.listen.headers_timeout_ms} > ${config.listen.request_timeout_ms})`,
    );
  }
  checkSaes(config, origin);
  checkPolicies(config, origin);
  const redis = config.coordination?.redis;
  if (redis && !!redis.sentinels !== !!redis.master_name) {
    throw new ConfigError(`${origin} is invalid:\n  /coordination/redis: sentinels and master_name go together (Redis Sentinel), or neither (a Redis URL)`);
  }
  checkNetwork(config, (field, why) => {
    throw new ConfigError(`${origin} is invalid:\n  ${field}: ${why}`);
  });
  return config;
}

type SchemaError = { instancePath: string; message: string; keyword?: string; params?: Record<string, unknown> };

/**
 * The `hsm` union would report every mismatch of every member; report the errors of the member its `type`
 * names instead, so the operator reads "/hsm: must have required properties module", not a schema dump.
 */
function describeError(e: SchemaError, config: unknown): string[] {
  if (e.instancePath === '/hsm' || e.instancePath.startsWith('/hsm/')) {
    const hsm = (config as { hsm?: { type?: unknown } } | null)?.hsm;
    const member = hsm?.type === 'pkcs11' ? Pkcs11HsmSchema : hsm?.type === 'mock' ? MockHsmSchema : undefined;
    if (!member) return [`  /hsm/type: must be "pkcs11" or "mock"`];
    return [...Value.Errors(member, hsm)].map((m) => `  /hsm${m.instancePath}: ${m.message}`);
  }
  // The same for a link's source: report against the driver its `type` names.
  const source = /^\/links\/(\d+)\/source(\/|$)/.exec(e.instancePath);
  if (source) {
    const at = `/links/${source[1]}/source`;
    const src = (config as { links?: Array<{ source?: { type?: unknown } }> } | null)?.links?.[Number(source[1])]?.source;
    const member = SOURCE_SCHEMAS[String(src?.type) as keyof typeof SOURCE_SCHEMAS];
    if (!member) return [`  ${at}/type: must be one of ${Object.keys(SOURCE_SCHEMAS).map((k) => `"${k}"`).join(', ')}`];
    return [...Value.Errors(member, src)].map((m) => `  ${at}${m.instancePath}: ${m.message}`);
  }
  // "must be equal to one of the allowed values" leaves the operator guessing which: name them.
  const allowed = e.keyword === 'enum' ? e.params?.allowedValues : undefined;
  if (Array.isArray(allowed)) return [`  ${e.instancePath || '/'}: must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`];
  return [`  ${e.instancePath || '/'}: ${e.message}`];
}

function checkKeyLimits(k: KeyLimits, origin: string): void {
  const fail = (field: string, why: string) => {
    throw new ConfigError(`${origin} is invalid:\n  /keys/${field}: ${why}`);
  };
  for (const field of ['key_size', 'min_key_size', 'max_key_size'] as const) {
    if (k[field] % 8 !== 0) fail(field, `must be a multiple of 8 bits (is ${k[field]})`);
  }
  if (k.min_key_size > k.key_size) fail('min_key_size', `must not exceed key_size (${k.min_key_size} > ${k.key_size})`);
  if (k.key_size > k.max_key_size) fail('max_key_size', `must be at least key_size (${k.max_key_size} < ${k.key_size})`);
  // One key is made of at most this many blocks: the key_part column is a smallint.
  if (k.max_key_size / k.key_size > 1024) fail('max_key_size', 'may be at most 1024 × key_size');
}

function checkSaes(config: Config, origin: string): void {
  const seen = new Set<string>();
  config.saes.forEach((sae, i) => {
    if (seen.has(sae.id)) throw new ConfigError(`${origin} is invalid:\n  /saes/${i}/id: duplicate SAE ID ${sae.id}`);
    seen.add(sae.id);
  });
}

function checkPolicies(config: Config, origin: string): void {
  const seen = new Set<string>();
  config.policies.forEach((p, i) => {
    const [x, y] = p.saes as [string, string];
    if (x === y) throw new ConfigError(`${origin} is invalid:\n  /policies/${i}/saes: a pair of two different SAEs, not ${x} twice`);
    const pair = [x, y].sort().join(' and ');
    if (seen.has(pair)) throw new ConfigError(`${origin} is invalid:\n  /policies/${i}/saes: a second policy for ${pair}`);
    seen.add(pair);
  });
}

/**
 * Reads a secret, first found of: the config's `file`; the file named by the environment variable `<envName>_FILE`
 * (the convention of container secrets and systemd credentials: `KMS_HSM_PIN_FILE=/run/secrets/kms_hsm_pin`);
 * the environment variable `envName`. A file's trailing newline is dropped. Names all three when none is set.
 */
export function readSecret(what: string, envName: string, file?: string): string {
  const path = file ?? process.env[`${envName}_FILE`];
  if (path) {
    try {
      return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError(`cannot read ${what} from ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }
  const value = process.env[envName];
  if (!value) throw new ConfigError(`${what} is not set: put it in the environment variable ${envName}, or its file's path in ${envName}_FILE`);
  return value;
}
