import { Type, type Static } from 'typebox';

/**
 * The configuration file's schema: the single source for validation, defaults and the TypeScript type.
 * Field names are snake_case like the ETSI 014 status fields they mirror. Secrets (HSM PIN, database URL with a
 * password) come from the environment or files, never from this file: see `load.ts`.
 */

/** SAE and KME IDs: clients put them in URL paths without encoding, so keep them to unreserved characters. */
export const IdPattern = '^[A-Za-z0-9._~-]{1,64}$';

const Id = (description: string) => Type.String({ pattern: IdPattern, description });
const PositiveInt = (description: string, def: number) =>
  Type.Integer({ minimum: 1, maximum: 2_147_483_647, default: def, description });

export const KeyLimitsSchema = Type.Object(
  {
    key_size: PositiveInt('default key size in bits; also the block size material is stored in', 256),
    min_key_size: PositiveInt('smallest key size in bits a request may ask for', 64),
    max_key_size: PositiveInt('largest key size in bits a request may ask for', 1024),
    max_key_count: PositiveInt('pool cap, in blocks of key_size bits, per link', 100_000),
    max_key_per_request: PositiveInt('most keys one enc_keys or dec_keys request may carry', 128),
    max_SAE_ID_count: Type.Integer({ minimum: 0, maximum: 64, default: 8, description: 'most additional slaves' }),
  },
  { additionalProperties: false, default: {} },
);

export const SaeSchema = Type.Object(
  {
    id: Id('the SAE ID used in ETSI 014 paths'),
    certificate_cn: Type.Optional(Type.String({ minLength: 1, description: 'subject CN; defaults to the SAE ID' })),
    certificate_sha256: Type.Optional(
      Type.String({
        pattern: '^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$',
        description: 'pin one certificate by its SHA-256 fingerprint, in addition to the CN',
      }),
    ),
  },
  { additionalProperties: false },
);

export const Pkcs11HsmSchema = Type.Object(
  {
      type: Type.Literal('pkcs11'),
      module: Type.String({ minLength: 1, description: 'path of the PKCS#11 module (.so)' }),
      token_label: Type.String({ minLength: 1 }),
      key_label: Type.Optional(Type.String({ minLength: 1, description: "KEK label prefix; default 'kms-kek'" })),
      pin_env: Type.Optional(Type.String({ minLength: 1, description: "env variable with the PIN; default KMS_HSM_PIN" })),
      pin_file: Type.Optional(Type.String({ minLength: 1, description: 'file holding the PIN (wins over pin_env)' })),
      create_key_if_missing: Type.Optional(Type.Boolean({ description: 'generate KEK v1 when absent; default false' })),
    },
    { additionalProperties: false },
);
export const MockHsmSchema = Type.Object({ type: Type.Literal('mock') }, { additionalProperties: false });
export const HsmSchema = Type.Union([Pkcs11HsmSchema, MockHsmSchema]);

export const SourceSchema = Type.Object(
  {
    type: Type.Literal('simulator'),
    link_id: Type.Optional(Type.String({ pattern: IdPattern })),
    rate_bits_per_second: Type.Number({ exclusiveMinimum: 0, default: 1_000_000 }),
    max_blocks_per_batch: Type.Integer({ minimum: 1, maximum: 10_000, default: 1_000 }),
  },
  { additionalProperties: false, default: { type: 'simulator' } },
);

export const ConfigSchema = Type.Object(
  {
    kme_id: Id('this KME'),
    listen: Type.Object(
      {
        host: Type.String({ default: '0.0.0.0' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 8443 }),
      },
      { additionalProperties: false, default: {} },
    ),
    tls: Type.Object(
      {
        cert: Type.String({ minLength: 1, description: 'server certificate chain (PEM)' }),
        key: Type.String({ minLength: 1, description: 'server private key (PEM)' }),
        ca: Type.String({ minLength: 1, description: 'CA bundle that SAE client certificates must chain to (PEM)' }),
      },
      { additionalProperties: false },
    ),
    database: Type.Object(
      {
        url_env: Type.String({ minLength: 1, default: 'KMS_DATABASE_URL' }),
        pool_size: Type.Integer({ minimum: 1, maximum: 200, default: 16 }),
      },
      { additionalProperties: false, default: {} },
    ),
    hsm: HsmSchema,
    saes: Type.Array(SaeSchema, { minItems: 1 }),
    keys: KeyLimitsSchema,
    source: SourceSchema,
  },
  { additionalProperties: false },
);

export type Config = Static<typeof ConfigSchema>;
export type KeyLimits = Static<typeof KeyLimitsSchema>;
export type SaeEntry = Static<typeof SaeSchema>;
export type HsmConfig = Static<typeof HsmSchema>;
export type SourceConfig = Static<typeof SourceSchema>;
