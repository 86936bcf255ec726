import { Type, type Static } from 'typebox';

/**
 * The admin API's pools (/admin/v1/pools, docs/operators.md "Pools"): a pool is one link's material at this KME.
 * TypeBox schemas shared by the routes, `openapi/kme-admin.json` and `kms pool`.
 */

const LinkId = Type.String({ pattern: '^[A-Za-z0-9._~-]{1,128}$' });
const Time = Type.String({ format: 'date-time' });

export const PoolPathSchema = Type.Object({ link_id: LinkId }, { additionalProperties: false });

export const PoolSchema = Type.Object(
  {
    link_id: LinkId,
    state: Type.Union(
      [Type.Literal('active'), Type.Literal('suspended'), Type.Literal('draining'), Type.Literal('pending_deletion'), Type.Literal('deleted')],
      { description: 'active; suspended (no keys made from it); draining (keys made, device not read); pending_deletion; deleted (final)' },
    ),
    delete_at: Type.Optional(Type.String({ format: 'date-time', description: 'pending_deletion: when its material will be destroyed' })),
    changed_at: Time,
    peer_kme_id: Type.Optional(Type.String({ description: 'the KME at the other end (none: a loopback link)' })),
    role: Type.Union([Type.Literal('loopback'), Type.Literal('primary'), Type.Literal('secondary')]),
    available_blocks: Type.Integer({ description: 'blocks of this end ready to be handed out' }),
    block_bits: Type.Integer(),
    hands_out: Type.Boolean({ description: 'keys and one-time pads are made from it' }),
    ingests: Type.Boolean({ description: "its device is read (a primary or loopback end's own reads)" }),
  },
  { additionalProperties: false },
);
export type PoolView = Static<typeof PoolSchema>;

export const PoolListSchema = Type.Object({ pools: Type.Array(PoolSchema) }, { additionalProperties: false });

export const PoolChangeBodySchema = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'recorded in the custody log' })) },
  { additionalProperties: false },
);

export const ScheduleDeletionSchema = Type.Object(
  {
    wait_seconds: Type.Integer({
      minimum: 1,
      maximum: 30 * 86_400,
      description: "the waiting period before the material is destroyed (at least the KME's admin.min_pool_deletion_wait_seconds)",
    }),
    reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'recorded in the custody log' })),
  },
  { additionalProperties: false },
);

/** Said in the route's description and in `kms pool outage --help`: a link has two ends, each with its own device. */
export const OUTAGE_DRILL_NOTE =
  "A fault drill for a simulated link only (a real device is cut at the device: 400). It takes down this KME's end of the link: " +
  'no new material is stored for the link at either KME while it is down, whichever end is cut (the primary reads nothing new; ' +
  "a cut secondary cannot fetch what the primary announces, so the primary's new material stays unconfirmed and is not handed out). " +
  'What the pools hold is still served; once it runs out, pairs with link_failure pqc_fallback get fallback keys, others 503. ' +
  'The pool state does not change; the drill is a pool custody event.';

export const OutageDrillSchema = Type.Object(
  { seconds: Type.Integer({ minimum: 1, maximum: 86_400, description: 'how long the link stays down' }) },
  { additionalProperties: false },
);

export const OutageDrillResultSchema = Type.Object(
  {
    link_id: LinkId,
    seconds: Type.Integer({ description: 'how long the link stays down, as asked' }),
    down_until: Type.String({ format: 'date-time', description: 'when the simulated device comes back' }),
  },
  { additionalProperties: false },
);
