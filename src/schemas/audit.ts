import { Type, type Static } from 'typebox';

/**
 * The auditor API (/audit/v1, docs/custody.md): TypeBox schemas shared by its routes and the published document
 * `openapi/kme-audit.json`. Hashes are standard base64; a checkpoint is the C2SP signed note as text.
 */

const Seq = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const Size = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Hash = Type.String({ description: 'SHA-256, standard base64' });

export const EventsQuerySchema = Type.Object(
  {
    from_seq: Type.Optional({ ...Seq, description: 'first sequence number to return (default 1)' }),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    key_id: Type.Optional(Type.String({ format: 'uuid', description: 'only events naming this key_ID' })),
    sae_id: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._~-]{1,64}$', description: 'only events of this SAE: as actor, or named as a slave' })),
  },
  { additionalProperties: false },
);

export const EventsPageSchema = Type.Object(
  {
    events: Type.Array(
      Type.Object({
        seq: Seq,
        sealed: Type.Boolean({ description: 'covered by the latest checkpoint' }),
        event: Type.Object({}, { additionalProperties: true, description: 'the event; JSON.stringify of it gives its canonical body (RFC 8785), the leaf' }),
      }),
    ),
    next_from_seq: Type.Optional({ ...Seq, description: 'where the next page starts; absent on the last page' }),
  },
  { additionalProperties: false },
);

export const CheckpointSchema = Type.Object(
  {
    tree_size: Size,
    checkpoint: Type.String({ description: 'the C2SP signed note: origin, tree size, root hash, then signature lines' }),
    sealed_at: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);

export const CheckpointsQuerySchema = Type.Object(
  {
    from_size: Type.Optional(Size),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  },
  { additionalProperties: false },
);
export const CheckpointsPageSchema = Type.Object(
  { checkpoints: Type.Array(CheckpointSchema), next_from_size: Type.Optional(Size) },
  { additionalProperties: false },
);

export const InclusionQuerySchema = Type.Object(
  { seq: Seq, tree_size: Type.Optional({ ...Size, description: 'a checkpoint size; default the latest' }) },
  { additionalProperties: false },
);
export const InclusionProofSchema = Type.Object(
  {
    seq: Seq,
    leaf_index: Size,
    tree_size: Size,
    leaf_hash: Hash,
    proof: Type.Array(Hash, { description: 'RFC 9162 audit path, leaf to root' }),
    checkpoint: Type.String({ description: 'the signed checkpoint of tree_size' }),
  },
  { additionalProperties: false },
);

export const ConsistencyQuerySchema = Type.Object(
  {
    first: { ...Size, description: 'the size of the checkpoint an auditor holds' },
    second: Type.Optional({ ...Size, description: 'a later checkpoint size; default the latest' }),
  },
  { additionalProperties: false },
);
export const ConsistencyProofSchema = Type.Object(
  {
    first: Size,
    second: Size,
    proof: Type.Array(Hash, { description: 'RFC 9162 consistency proof' }),
    checkpoint: Type.String({ description: 'the signed checkpoint of the second size' }),
  },
  { additionalProperties: false },
);

export const ExportQuerySchema = Type.Object(
  { after_size: Type.Optional({ ...Size, description: 'start at this checkpoint (continue an archive); default the beginning' }) },
  { additionalProperties: false },
);

export const KeysSchema = Type.Object(
  { vkeys: Type.Array(Type.String(), { description: 'C2SP verifier keys (name+keyid+base64), every key that ever signed' }) },
  { additionalProperties: false },
);

export type EventsQuery = Static<typeof EventsQuerySchema>;
export type EventsPage = Static<typeof EventsPageSchema>;
export type Checkpoint = Static<typeof CheckpointSchema>;
