import { Type, type Static } from 'typebox';
import { IdPattern, TagsSchema } from '../config/schema.js';

/**
 * The admin API's keys (/admin/v1/keys, docs/operators.md "Keys"): TypeBox schemas shared by the routes, the
 * published document `openapi/kme-admin.json` and `kms key`.
 */

const KeyId = Type.String({ format: 'uuid', description: 'key_ID' });
const SaeId = Type.String({ pattern: IdPattern });
const LinkId = Type.String({ pattern: '^[A-Za-z0-9._~-]{1,128}$' });
const Time = Type.String({ format: 'date-time' });
const State = Type.String({ description: 'RESERVED, DELIVERED (live: material held) or DESTROYED, EXPIRED, COMPROMISED (ended)' });
const Holder = { sae_id: SaeId, as: Type.Union([Type.Literal('master'), Type.Literal('slave')]) };

export const KeyPathSchema = Type.Object({ key_id: KeyId }, { additionalProperties: false });

export const KeySchema = Type.Object(
  {
    key_ID: KeyId,
    state: State,
    suspended: Type.Boolean({ description: 'held by an operator at this KME: no slave gets it until resumed' }),
    link_id: Type.Optional(LinkId),
    master_SAE_ID: Type.Optional(SaeId),
    origin_kme: Type.Optional(Type.String({ description: "the KME of the master SAE (the key's origin)" })),
    size: Type.Optional(Type.Integer({ description: 'bits' })),
    key_origin: Type.Optional(
      Type.Union([Type.Literal('qkd'), Type.Literal('pqc_fallback')], {
        description: "where its material came from: the link's QKD material, or the link-failure fallback (docs/operators.md)",
      }),
    ),
    slaves: Type.Optional(Type.Array(SaeId, { description: 'the SAEs named as its slaves' })),
    relayed_to: Type.Optional(Type.Array(Type.String(), { description: 'the peer KMEs it was passed to' })),
    created_at: Type.Optional(Time),
    expires_at: Type.Optional(Time),
    ended_at: Type.Optional(Time),
    tags: Type.Optional(TagsSchema), // the tags of the SAE pair policy it was delivered under
    holders: Type.Array(Type.Object({ ...Holder, at: Time }, { additionalProperties: false }), {
      description: 'the SAEs that received it from this KME',
    }),
    custody: Type.Array(
      Type.Object({ seq: Type.Integer(), at: Time, actor: Type.String(), operation: Type.String(), outcome: Type.String() }, { additionalProperties: false }),
      { description: "the key's events in this KME's custody log" },
    ),
  },
  { additionalProperties: false, description: "One key as this KME knows it: its row while it has one, and its custody log (which outlives the row)." },
);
export type KeyView = Static<typeof KeySchema>;

export const KEY_CHANGES = ['suspend', 'resume', 'revoke', 'destroy'] as const;
export type KeyChange = (typeof KEY_CHANGES)[number];

export const KeyChangeSchema = Type.Object(
  {
    key_ids: Type.Array(KeyId, { minItems: 1, maxItems: 1024, uniqueItems: true }),
    reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'recorded in the custody log' })),
  },
  { additionalProperties: false },
);

export const KeyChangeResultSchema = Type.Object(
  {
    operation: Type.Union([Type.Literal('suspend'), Type.Literal('resume'), Type.Literal('revoke'), Type.Literal('destroy')]),
    changed: Type.Array(KeyId, { description: 'keys this request changed (revoke: every key known here, recorded as compromised)' }),
    erased: Type.Array(KeyId, { description: 'keys whose material this request erased here' }),
    voided_at: Type.Optional(
      Type.Array(Type.String(), { description: 'revoke, destroy: the adjacent KMEs asked to void their copies (in the background, retried)' }),
    ),
    unchanged: Type.Array(Type.Object({ key_ID: KeyId, why: Type.String() }, { additionalProperties: false })),
    holders: Type.Optional(
      Type.Array(Type.Object({ key_ID: KeyId, ...Holder, at: Time }, { additionalProperties: false }), {
        description: 'revoke: every SAE that received one of the keys from this KME',
      }),
    ),
  },
  { additionalProperties: false },
);
export type KeyChangeResult = Static<typeof KeyChangeResultSchema>;

export const ReceivedQuerySchema = Type.Object(
  {
    since: Time,
    until: Type.Optional(Time),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 })),
    after_seq: Type.Optional(Type.Integer({ minimum: 0, description: "the previous page's next_after_seq" })),
  },
  { additionalProperties: false },
);

export const ReceiptsSchema = Type.Object(
  {
    sae_id: SaeId,
    since: Time,
    keys: Type.Array(
      Type.Object({ key_ID: KeyId, as: Holder.as, at: Time, link_id: Type.Optional(LinkId), seq: Type.Integer({ description: 'the custody event' }) }, { additionalProperties: false }),
    ),
    next_after_seq: Type.Optional(Type.Integer({ description: 'more keys: ask again with after_seq set to this' })),
  },
  { additionalProperties: false, description: 'The keys an SAE received from this KME since a time, oldest first.' },
);
export type ReceiptsView = Static<typeof ReceiptsSchema>;

export const LinkPathSchema = Type.Object({ link_id: LinkId }, { additionalProperties: false });
export const SinceQuerySchema = Type.Object({ since: Time }, { additionalProperties: false });

export const LinkHoldersSchema = Type.Object(
  {
    link_id: LinkId,
    since: Time,
    holders: Type.Array(
      Type.Object({ ...Holder, keys: Type.Integer(), first_at: Time, last_at: Time }, { additionalProperties: false }),
    ),
  },
  { additionalProperties: false, description: "The SAEs that received from this KME keys made from a link's material since a time." },
);
export type LinkHoldersView = Static<typeof LinkHoldersSchema>;
