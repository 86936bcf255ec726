import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';
import { ConfigError } from '../../config/load.js';
import { IdPattern } from '../../config/schema.js';

/**
 * The consumer agent's config file (`kms agent --config FILE`, docs/agent.md): one agent per site, one binding per
 * encryptor it keys. JSON like the KME's config; relative paths resolve against the file's folder; validated once at
 * boot with errors that name the bad field.
 */

const Seconds = (description: string, def?: number) =>
  Type.Number({ exclusiveMinimum: 0, maximum: 365 * 86_400, ...(def === undefined ? {} : { default: def }), description });
const File = (description: string) => Type.String({ minLength: 1, description });

/** A binding's name: in URLs between the agents and in file names of the state directory. */
export const BindingNamePattern = '^[A-Za-z0-9._-]{1,64}$';

const BindingSchema = Type.Object(
  {
    name: Type.String({ pattern: BindingNamePattern, description: 'the same name at both agents: it joins the two ends' }),
    role: Type.Union([Type.Literal('master'), Type.Literal('slave')], { description: 'the master asks for keys and drives the rotation' }),
    connector: Type.Object(
      { type: Type.String({ minLength: 1, description: 'a connector type of the registry (strongswan, exec, …)' }) },
      { additionalProperties: true, description: "the encryptor's connector and its own settings" },
    ),
    sae: Type.Object(
      {
        id: Type.String({ pattern: IdPattern, description: 'this side\'s SAE ID, as enrolled at its KME' }),
        cert: File('the SAE\'s client certificate (PEM), presented to its KME'),
        key: File('its private key (PEM)'),
      },
      { additionalProperties: false },
    ),
    kme: Type.Object(
      {
        url: Type.String({ pattern: '^https://', description: 'this side\'s KME, where the ETSI 014 API listens' }),
        ca: File('the CA bundle the KME\'s server certificate chains to (PEM)'),
      },
      { additionalProperties: false },
    ),
    peer: Type.Object(
      {
        url: Type.String({ pattern: '^https://', description: 'the peer agent\'s listener' }),
        identity: Type.String({ minLength: 1, description: 'the subject CN its agent certificate must carry' }),
        sae_id: Type.String({ pattern: IdPattern, description: 'the peer\'s SAE ID (the slave of enc_keys, the master of dec_keys)' }),
      },
      { additionalProperties: false },
    ),
    key_size: Type.Integer({ minimum: 64, maximum: 8192, multipleOf: 8, default: 256, description: 'bits per key (master only)' }),
    rotation_seconds: Seconds('a new key this often (the master schedules; the slave follows)', 3600),
    max_age_seconds: Seconds('a key older than this is expired: on_expiry applies', 7200),
    retry_seconds: Seconds('a failed rotation is tried again after this long', 10),
    on_expiry: Type.Union([Type.Literal('fail_closed'), Type.Literal('fail_open')], {
      default: 'fail_closed',
      description: 'fail_closed: take the traffic down (connector.shutDown); fail_open: keep the old key in service',
    }),
  },
  { additionalProperties: false },
);

export const AgentConfigSchema = Type.Object(
  {
    listen: Type.Object(
      {
        host: Type.String({ default: '0.0.0.0' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 7443 }),
      },
      { additionalProperties: false, default: {} },
    ),
    tls: Type.Object(
      {
        cert: File('this agent\'s certificate (PEM, serverAuth and clientAuth): it serves and calls the peer agents'),
        key: File('its private key (PEM)'),
        ca: File('the CA bundle the peer agents\' certificates chain to (PEM)'),
      },
      { additionalProperties: false },
    ),
    state_dir: File('where the agent keeps each binding\'s state (key_IDs and steps, never keys)'),
    bindings: Type.Array(BindingSchema, { minItems: 1, maxItems: 256 }),
  },
  { additionalProperties: false },
);

export type AgentConfig = Static<typeof AgentConfigSchema>;
export type BindingConfig = AgentConfig['bindings'][number];

/** Reads, defaults and validates an agent config file. */
export function loadAgentConfig(path: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read agent config file ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`agent config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  const config = parseAgentConfig(raw, path);
  const base = dirname(resolve(path));
  for (const f of ['cert', 'key', 'ca'] as const) config.tls[f] = resolve(base, config.tls[f]);
  config.state_dir = resolve(base, config.state_dir);
  for (const b of config.bindings) {
    b.sae.cert = resolve(base, b.sae.cert);
    b.sae.key = resolve(base, b.sae.key);
    b.kme.ca = resolve(base, b.kme.ca);
  }
  return config;
}

/** Validates an already-parsed agent config. `origin` names it in error messages. */
export function parseAgentConfig(raw: unknown, origin = 'agent config'): AgentConfig {
  const withDefaults = Value.Default(AgentConfigSchema, Value.Clone(raw));
  const errors = [...Value.Errors(AgentConfigSchema, withDefaults)];
  if (errors.length > 0) {
    const lines = [...new Set(errors.map(describe))].slice(0, 12);
    throw new ConfigError(`${origin} is invalid:\n${lines.join('\n')}`);
  }
  const config = withDefaults as AgentConfig;
  const fail = (field: string, why: string) => {
    throw new ConfigError(`${origin} is invalid:\n  ${field}: ${why}`);
  };
  const names = new Set<string>();
  config.bindings.forEach((b, i) => {
    if (names.has(b.name)) fail(`/bindings/${i}/name`, `a second binding named ${b.name}`);
    names.add(b.name);
    if (b.max_age_seconds < b.rotation_seconds) {
      fail(`/bindings/${i}/max_age_seconds`, `must be at least rotation_seconds (${b.max_age_seconds} < ${b.rotation_seconds})`);
    }
  });
  return config;
}

function describe(e: { instancePath: string; message: string; keyword?: string; params?: Record<string, unknown> }): string {
  // A union of literals reports each member; name the allowed values once instead.
  if (e.keyword === 'const' || e.keyword === 'anyOf') {
    if (/\/role$/.test(e.instancePath)) return `  ${e.instancePath}: must be "master" or "slave"`;
    if (/\/on_expiry$/.test(e.instancePath)) return `  ${e.instancePath}: must be "fail_closed" or "fail_open"`;
  }
  return `  ${e.instancePath || '/'}: ${e.message}`;
}
