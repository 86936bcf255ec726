import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Value } from 'typebox/value';
import { ConfigSchema, MockHsmSchema, Pkcs11HsmSchema, type Config, type KeyLimits } from './schema.js';

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
  return config;
}

/** Validates an already-parsed config object. `origin` names it in error messages. */
export function parseConfig(raw: unknown, origin = 'config'): Config {
  const withDefaults = Value.Default(ConfigSchema, Value.Clone(raw));
  const errors = [...Value.Errors(ConfigSchema, withDefaults)];
  if (errors.length > 0) {
    const lines = [...new Set(errors.flatMap((e) => describeError(e, withDefaults)))].slice(0, 12);
    throw new ConfigError(`${origin} is invalid:\n${lines.join('\n')}`);
  }
  const config = withDefaults as Config;
  checkKeyLimits(config.keys, origin);
  checkSaes(config, origin);
  return config;
}

type SchemaError = { instancePath: string; message: string };

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

/** Reads a secret from a file (trailing newline dropped) or an environment variable; names both when missing. */
export function readSecret(what: string, envName: string, file?: string): string {
  if (file) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError(`cannot read ${what} from ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }
  const value = process.env[envName];
  if (!value) throw new ConfigError(`${what} is not set: put it in the environment variable ${envName}`);
  return value;
}
