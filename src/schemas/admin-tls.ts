import { Type } from 'typebox';

/** The admin API's certificate rotation (/admin/v1/tls, docs/operators.md "Certificates"). */

const Time = Type.String({ format: 'date-time' });

export const TlsSchema = Type.Object(
  {
    server_certificate: Type.Object({ subject: Type.String(), sha256: Type.String(), not_after: Time }, { additionalProperties: false }),
    trust: Type.Object(
      {
        cas: Type.Array(Type.Object({ subject: Type.String(), sha256: Type.String(), not_after: Time }, { additionalProperties: false })),
        crls: Type.Array(
          Type.Object({ issuer: Type.String(), revoked: Type.Integer(), this_update: Time, next_update: Type.Optional(Time) }, { additionalProperties: false }),
        ),
        reloads: Type.Integer({ description: 'reloads since the KME started' }),
      },
      { additionalProperties: false },
    ),
    reloaded_at: Type.Optional(Time),
  },
  { additionalProperties: false, description: 'The TLS material in force: the server certificate, the CAs client certificates must chain to, their CRLs.' },
);

export const TlsReloadSchema = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'recorded in the custody log' })) },
  { additionalProperties: false },
);
