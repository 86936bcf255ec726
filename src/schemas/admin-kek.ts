import { Type } from 'typebox';

/** The admin API's KEK rotation (/admin/v1/kek, docs/operators.md "KEK rotation"). */

const Time = Type.String({ format: 'date-time' });

export const KekStatusSchema = Type.Object(
  {
    current: Type.Integer({ description: 'the KEK version new material is sealed under' }),
    versions: Type.Array(
      Type.Object(
        {
          version: Type.Integer(),
          in_hsm: Type.Boolean({ description: 'the HSM still holds it' }),
          created_at: Type.Optional(Time),
          destroyed_at: Type.Optional(Time),
          chunks: Type.Integer({ description: 'chunks of material sealed under it' }),
          keys: Type.Integer({ description: "relayed keys' own envelopes sealed under it" }),
          signing_keys: Type.Integer({ description: "custody signing keys' seeds sealed under it" }),
        },
        { additionalProperties: false },
      ),
    ),
    rewrap_pending: Type.Integer({ description: 'rows still sealed under an older version (the re-wrap moves them in the background)' }),
  },
  { additionalProperties: false },
);

export const KekRotateSchema = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'recorded in the custody log' })) },
  { additionalProperties: false },
);
