import { Type, type Static } from 'typebox';
import { FingerprintPattern, IdPattern, TagsSchema } from '../config/schema.js';

/**
 * The admin API (/admin/v1, docs/operators.md): TypeBox schemas shared by its routes, the published document
 * `openapi/kme-admin.json` and the `kms` commands that call it.
 */

const SaeId = Type.String({ pattern: IdPattern, description: 'SAE ID (letters, digits, . _ ~ -; at most 64)' });

export const SaePathSchema = Type.Object({ sae_id: SaeId }, { additionalProperties: false });

export const SaeSchema = Type.Object(
  {
    sae_id: SaeId,
    certificate_cn: Type.String({ description: 'the subject CN that authenticates as this SAE' }),
    certificate_sha256: Type.Optional(Type.String({ description: 'the one certificate pinned, SHA-256 fingerprint (hex)' })),
    status: Type.Union([Type.Literal('active'), Type.Literal('suspended'), Type.Literal('revoked')]),
    allowed_peers: Type.Optional(Type.Array(SaeId, { description: 'the SAEs it may share keys with; absent: any' })),
    tags: TagsSchema,
    source: Type.Union([Type.Literal('config'), Type.Literal('admin')], { description: 'listed in the config file, or enrolled by an operator' }),
    unlisted: Type.Optional(Type.Boolean({ description: 'listed in the config file once, no longer: admitted nowhere' })),
    created_at: Type.String({ format: 'date-time' }),
    changed_at: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type SaeView = Static<typeof SaeSchema>;

export const SaeListQuerySchema = Type.Object(
  { status: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('suspended'), Type.Literal('revoked')])) },
  { additionalProperties: false },
);
export const SaeListSchema = Type.Object({ saes: Type.Array(SaeSchema) }, { additionalProperties: false });

export const EnrollSaeSchema = Type.Object(
  {
    sae_id: SaeId,
    certificate_cn: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'default: the SAE ID' })),
    certificate_sha256: Type.Optional(Type.String({ pattern: FingerprintPattern, description: 'pin one certificate' })),
    allowed_peers: Type.Optional(Type.Array(SaeId, { uniqueItems: true, maxItems: 1024 })),
    tags: Type.Optional(TagsSchema),
  },
  { additionalProperties: false },
);
export type EnrollSae = Static<typeof EnrollSaeSchema>;

export const StatusChangeSchema = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'recorded in the custody log' })) },
  { additionalProperties: false },
);
