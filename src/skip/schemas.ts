import { Type } from 'typebox';

/**
 * SKIP message shapes (draft-cisco-skip): JSON, binary values as lowercase hex. A keyId is 128 bits: here the 16
 * bytes of the ETSI key_ID (a UUID), so the same key has one identity in both APIs and in the custody log.
 */
const Hex = (description: string) => Type.String({ pattern: '^([0-9a-f]{2})+$', description });
const SystemId = Type.String({ minLength: 1, maxLength: 64, description: 'a SKIP system ID' });

export const SkipErrorSchema = Type.Object({ message: Type.String() }, { $id: 'SkipError', description: 'why the request was refused' });
export const SkipErrorResponses = { 400: SkipErrorSchema, 401: SkipErrorSchema, 503: SkipErrorSchema };

export const CapabilitiesSchema = Type.Object(
  {
    entropy: Type.Boolean({ description: 'GET /entropy is served' }),
    key: Type.Boolean({ description: 'GET /key is served' }),
    algorithm: Type.String({ description: 'where keys come from: QKD key material of the ETSI 014 pool' }),
    localSystemID: Type.String({ description: "the calling router's system ID" }),
    remoteSystemID: Type.Array(Type.String(), { description: 'the system IDs this router may share keys with' }),
  },
  { additionalProperties: false },
);

export const KeySchema = Type.Object(
  {
    keyId: Type.String({ pattern: '^[0-9a-f]{32}$', description: '128-bit key identifier, hex (the ETSI key_ID without its dashes)' }),
    key: Hex('the key, hex'),
  },
  { additionalProperties: false },
);

export const EntropySchema = Type.Object(
  {
    randomStr: Hex('random bytes, hex'),
    minentropy: Type.Integer({ description: 'the bits of entropy in randomStr' }),
  },
  { additionalProperties: false },
);

export const KeyQuerySchema = Type.Object(
  {
    remoteSystemID: SystemId,
    size: Type.Optional(Type.Integer({ minimum: 8, description: 'key size in bits, a multiple of 8; default: the KME\'s key_size' })),
  },
  { additionalProperties: true },
);

export const KeyByIdParamsSchema = Type.Object({ keyId: Type.String({ description: 'the keyId the other router received' }) });
export const KeyByIdQuerySchema = Type.Object({ remoteSystemID: SystemId }, { additionalProperties: true });

export const EntropyQuerySchema = Type.Object(
  { minentropy: Type.Optional(Type.Integer({ minimum: 8, maximum: 8192, description: 'bits of entropy, a multiple of 8; default 256' })) },
  { additionalProperties: true },
);
