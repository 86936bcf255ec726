import { Type, type Static } from 'typebox';

/** SKIP system IDs: routers put them in query strings, so keep them to unreserved characters like SAE IDs. */
const SystemId = (description: string) => Type.String({ pattern: '^[A-Za-z0-9._~-]{1,64}$', description });
const SaeId = (description: string) => Type.String({ pattern: '^[A-Za-z0-9._~-]{1,64}$', description });

export const SkipRouterSchema = Type.Object(
  {
    system_id: SystemId("the router's SKIP system ID: its localSystemID, and the remoteSystemID its peers name it by"),
    sae_id: SaeId('the SAE this router is towards the key service (registered in saes like any SAE): its keys, policies and custody events'),
    psk_identity: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: "the TLS-PSK identity the router sends; default: its system_id" })),
    psk_file: Type.Optional(Type.String({ minLength: 1, description: "file holding the pre-shared key (resolved against the config file's directory)" })),
    certificate_cn: Type.Optional(
      Type.String({ minLength: 1, description: 'instead of a PSK: the subject CN of the client certificate the router presents (needs skip.tls)' }),
    ),
    psk_format: Type.Union([Type.Literal('hex'), Type.Literal('text')], {
      default: 'hex',
      description: 'hex: the file holds the key as hex digits; text: its bytes (one trailing newline dropped) are the key',
    }),
  },
  { additionalProperties: false },
);

export const SkipSchema = Type.Object(
  {
    listen: Type.Object(
      {
        host: Type.String({ default: '0.0.0.0' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 8444 }),
      },
      { additionalProperties: false, default: {} },
    ),
    tls: Type.Optional(
      Type.Object(
        {
          cert: Type.String({ minLength: 1, description: 'server certificate chain (PEM), for routers that authenticate with certificates' }),
          key: Type.String({ minLength: 1, description: 'its private key (PEM)' }),
          ca: Type.String({ minLength: 1, description: "CA bundle the routers' client certificates must chain to (PEM)" }),
        },
        { additionalProperties: false, description: 'certificates beside the PSKs; none: PSK only' },
      ),
    ),
    min_tls_version: Type.Union([Type.Literal('TLSv1.3'), Type.Literal('TLSv1.2')], {
      default: 'TLSv1.3',
      description: 'TLSv1.2 adds the TLS 1.2 PSK cipher suites for routers without TLS 1.3 PSK',
    }),
    routers: Type.Array(SkipRouterSchema, { minItems: 1, description: 'the routers that call this KME over SKIP, one PSK each' }),
    remote_systems: Type.Array(
      Type.Object({ system_id: SystemId('a router behind another KME'), sae_id: SaeId('its SAE (in network.remote_saes)') }, { additionalProperties: false }),
      { default: [], description: 'routers behind other KMEs that routers here name as remoteSystemID' },
    ),
  },
  { additionalProperties: false, description: 'Cisco SKIP (draft-cisco-skip) for routers, on a TLS-PSK listener of its own (docs/skip.md); none when absent' },
);

export type SkipConfig = Static<typeof SkipSchema>;
export type SkipRouterConfig = Static<typeof SkipRouterSchema>;
