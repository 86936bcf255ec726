import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';
import { ConfigError } from '../config/load.js';
import { IdPattern } from '../config/schema.js';

/**
 * The config of `kms sim`: a process that plays the QKD devices of one or more links, each a device pair serving
 * the device side of ETSI GS QKD 014 to the KMEs at its two ends. Validated once at start; errors name the field.
 */

const EndSchema = Type.Object(
  {
    sae_id: Type.String({ pattern: IdPattern, description: "this end's SAE ID in the device pair's terms (unique in the file)" }),
    certificate_cn: Type.Optional(
      Type.String({ minLength: 1, description: 'subject CN of the certificate the KME at this end presents; default sae_id' }),
    ),
  },
  { additionalProperties: false },
);

export const SimLinkSchema = Type.Object(
  {
    link_id: Type.String({ pattern: IdPattern }),
    ends: Type.Array(EndSchema, { minItems: 2, maxItems: 2, description: 'the two devices of the pair' }),
    key_size: Type.Integer({ minimum: 8, maximum: 65_536, default: 256, description: 'bits per key; enc_keys size must equal it' }),
    rate_bits_per_second: Type.Number({ exclusiveMinimum: 0, default: 1_000_000, description: 'secure key rate' }),
    max_key_count: Type.Integer({
      minimum: 1,
      maximum: 10_000_000,
      default: 10_000,
      description: 'keys the pair buffers (not yet fetched by both ends); when full, production pauses',
    }),
    max_key_per_request: Type.Integer({ minimum: 1, maximum: 10_000, default: 128, description: 'most keys per call' }),
    qber: Type.Number({ minimum: 0, maximum: 0.5, default: 0.02, description: 'reported in status_extension; above 0.11 no key' }),
    outages: Type.Array(
      Type.Object(
        {
          after_seconds: Type.Number({ minimum: 0, description: 'seconds after the simulator starts' }),
          duration_seconds: Type.Number({ exclusiveMinimum: 0 }),
        },
        { additionalProperties: false },
      ),
      { default: [] },
    ),
  },
  { additionalProperties: false },
);

export const SimConfigSchema = Type.Object(
  {
    listen: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 9443 }),
      },
      { additionalProperties: false, default: {} },
    ),
    tls: Type.Object(
      {
        cert: Type.String({ minLength: 1, description: 'the server certificate of the simulated devices (PEM)' }),
        key: Type.String({ minLength: 1, description: 'its private key (PEM)' }),
        ca: Type.String({ minLength: 1, description: 'CA bundle KME client certificates must chain to (PEM)' }),
      },
      { additionalProperties: false },
    ),
    links: Type.Array(SimLinkSchema, { minItems: 1 }),
  },
  { additionalProperties: false },
);

export type SimConfig = Static<typeof SimConfigSchema>;
export type SimLinkConfig = Static<typeof SimLinkSchema>;

/** Reads and validates a `kms sim` config file; relative TLS paths resolve against the file's folder. */
export function loadSimConfig(path: string): SimConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code ? `cannot read config file ${path}: ${code}` : `config file ${path} is not valid JSON: ${(err as Error).message}`,
    );
  }
  const config = parseSimConfig(raw, path);
  const base = dirname(resolve(path));
  for (const field of ['cert', 'key', 'ca'] as const) config.tls[field] = resolve(base, config.tls[field]);
  return config;
}

/** Validates an already-parsed config object; `origin` names it in error messages. */
export function parseSimConfig(raw: unknown, origin = 'sim config'): SimConfig {
  const withDefaults = Value.Default(SimConfigSchema, Value.Clone(raw));
  const errors = [...Value.Errors(SimConfigSchema, withDefaults)];
  if (errors.length > 0) {
    const lines = [...new Set(errors.map((e) => `  ${e.instancePath || '/'}: ${e.message}`))].slice(0, 12);
    throw new ConfigError(`${origin} is invalid:\n${lines.join('\n')}`);
  }
  const config = withDefaults as SimConfig;
  checkLinks(config, origin);
  return config;
}

/** What the schema cannot say: sizes in whole bytes, IDs unique, the two ends of a pair told apart. */
function checkLinks(config: SimConfig, origin: string): void {
  const fail = (field: string, why: string) => {
    throw new ConfigError(`${origin} is invalid:\n  ${field}: ${why}`);
  };
  const linkIds = new Set<string>();
  const saeIds = new Set<string>();
  config.links.forEach((link, i) => {
    if (link.key_size % 8 !== 0) fail(`/links/${i}/key_size`, `must be a multiple of 8 bits (is ${link.key_size})`);
    if (linkIds.has(link.link_id)) fail(`/links/${i}/link_id`, `duplicate link ID ${link.link_id}`);
    linkIds.add(link.link_id);
    link.ends.forEach((end, j) => {
      // The path's SAE ID alone must say which link and which end a call is about.
      if (saeIds.has(end.sae_id)) fail(`/links/${i}/ends/${j}/sae_id`, `duplicate SAE ID ${end.sae_id} (each end needs its own)`);
      saeIds.add(end.sae_id);
    });
    const [a, b] = link.ends.map((e) => e.certificate_cn ?? e.sae_id);
    if (a === b) fail(`/links/${i}/ends/1/certificate_cn`, `both ends would be identified by the same certificate CN ${a}`);
  });
}
