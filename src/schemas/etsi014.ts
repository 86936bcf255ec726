import { Type } from 'typebox';

/**
 * ETSI GS QKD 014 V1.1.1 data formats as TypeBox schemas: they validate requests, type the handlers and generate
 * the OpenAPI document (openapi/etsi-gs-qkd-014.json is the published copy; a test fails when they drift).
 * Request schemas check JSON types only and tolerate unknown fields; limits that depend on configuration
 * (sizes, counts) are checked by the key service, which words the errors the standard's way.
 */

export const ErrorSchema = Type.Object(
  {
    message: Type.String(),
    details: Type.Optional(Type.Array(Type.Object({}, { additionalProperties: true }))),
  },
  { $id: 'Error', description: 'Error (ETSI 014 Table 13)' },
);

export const StatusSchema = Type.Object(
  {
    source_KME_ID: Type.String(),
    target_KME_ID: Type.String(),
    master_SAE_ID: Type.String(),
    slave_SAE_ID: Type.String(),
    key_size: Type.Integer({ description: 'default key size in bits' }),
    stored_key_count: Type.Integer({ description: 'keys of key_size bits deliverable to this pair now' }),
    max_key_count: Type.Integer(),
    max_key_per_request: Type.Integer(),
    max_key_size: Type.Integer(),
    min_key_size: Type.Integer(),
    max_SAE_ID_count: Type.Integer(),
    status_extension: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { $id: 'Status', description: 'Status (ETSI 014 Table 9)' },
);

const ExtensionList = Type.Array(Type.Object({}, { additionalProperties: true }));

export const KeyRequestSchema = Type.Object(
  {
    number: Type.Optional(Type.Integer({ description: 'number of keys, default 1' })),
    size: Type.Optional(Type.Integer({ description: 'key size in bits, default key_size' })),
    additional_slave_SAE_IDs: Type.Optional(Type.Array(Type.String())),
    extension_mandatory: Type.Optional(ExtensionList),
    extension_optional: Type.Optional(ExtensionList),
  },
  { additionalProperties: true, description: 'Key request (ETSI 014 Table 10)' },
);

export const KeyIdsSchema = Type.Object(
  {
    key_IDs: Type.Array(
      Type.Object(
        { key_ID: Type.String(), key_ID_extension: Type.Optional(Type.Object({}, { additionalProperties: true })) },
        { additionalProperties: true },
      ),
    ),
    key_IDs_extension: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: true, description: 'Key IDs (ETSI 014 Table 12)' },
);

export const KeyContainerSchema = Type.Object(
  {
    keys: Type.Array(
      Type.Object({
        key_ID: Type.String({ format: 'uuid' }),
        key: Type.String({ description: 'standard base64 (RFC 4648 §4) with padding' }),
        key_extension: Type.Optional(
          Type.Object(
            { qkms_key_origin: Type.Enum(['qkd', 'pqc_fallback']) },
            { description: "this key's origin, when the keys of an answer differ (key_container_extension says mixed)" },
          ),
        ),
      }),
    ),
    key_container_extension: Type.Optional(
      Type.Object(
        {
          // An enum, not a union of literals: the response serializer writes it as a plain string, with no branch to pick.
          qkms_key_origin: Type.Enum(['qkd', 'pqc_fallback', 'mixed'], {
            description:
              "where the keys' material came from: qkd, or pqc_fallback (the pair's QKD pool could not serve and its policy " +
              'allows the fallback: made by the master\'s KME and sent to the slave\'s KME encapsulated with ML-KEM-768+X25519)',
          }),
        },
        { additionalProperties: true },
      ),
    ),
  },
  { $id: 'KeyContainer', description: 'Key container (ETSI 014 Table 11)' },
);

/** GET enc_keys may carry only number and size; anything else must be a POST (never ignored silently). */
export const EncKeysQuerySchema = Type.Object(
  { number: Type.Optional(Type.Integer()), size: Type.Optional(Type.Integer()) },
  { additionalProperties: false },
);

/** GET dec_keys carries exactly one key_ID. */
export const DecKeysQuerySchema = Type.Object({ key_ID: Type.String() }, { additionalProperties: false });

export const SlavePathSchema = Type.Object({ slave_SAE_ID: Type.String({ minLength: 1 }) });
export const MasterPathSchema = Type.Object({ master_SAE_ID: Type.String({ minLength: 1 }) });

/** The only error statuses ETSI 014 defines; every one carries the Error body. */
export const ErrorResponses = { 400: ErrorSchema, 401: ErrorSchema, 503: ErrorSchema };
