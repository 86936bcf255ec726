import { Type, type Static } from 'typebox';
import { IdPattern, LinkFailureSchema, TagsSchema } from '../config/schema.js';

/**
 * The admin API's policies per SAE pair (/admin/v1/policies, docs/operators.md "Policies"): TypeBox schemas shared
 * by the routes, `openapi/kme-admin.json` and `kms policy`.
 */

const SaeId = Type.String({ pattern: IdPattern });

export const PairPathSchema = Type.Object({ sae_a: SaeId, sae_b: SaeId }, { additionalProperties: false });

const Fields = {
  key_ttl_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 86_400, description: "how long the pair's keys wait for their slaves; default the KME's keys.key_ttl_seconds" })),
  min_pool_keys: Type.Optional(Type.Integer({ minimum: 0, description: 'below this many keys in the pool the pair draws from: a log line and a status_extension warning' })),
  max_keys_per_minute: Type.Optional(Type.Integer({ minimum: 1, description: 'keys the pair may take a minute at this KME; more get a 503' })),
  link_failure: Type.Optional(LinkFailureSchema),
  tags: Type.Optional(TagsSchema),
};

export const PolicyBodySchema = Type.Object(Fields, { additionalProperties: false, description: 'the whole policy: fields left out are unset' });
export type PolicyBody = Static<typeof PolicyBodySchema>;

export const PolicySchema = Type.Object(
  {
    saes: Type.Array(SaeId, { minItems: 2, maxItems: 2, description: 'the pair, in alphabetical order (it holds either way round)' }),
    ...Fields,
    // Always in an answer: a stored policy says what it does when its link fails (fail_closed unless set).
    link_failure: LinkFailureSchema,
    tags: TagsSchema,
    source: Type.Union([Type.Literal('config'), Type.Literal('admin')], { description: 'the config file, or an operator' }),
    changed_at: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type PolicyView = Static<typeof PolicySchema>;

export const PolicyListSchema = Type.Object({ policies: Type.Array(PolicySchema) }, { additionalProperties: false });
export const DeletedSchema = Type.Object({ deleted: Type.Boolean() }, { additionalProperties: false });
