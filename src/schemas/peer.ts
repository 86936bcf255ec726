import { Type, type Static } from 'typebox';

/**
 * The KME-to-KME API (docs/network.md): message shapes as TypeBox schemas, shared by the routes that serve them,
 * the client that sends them and the published document `openapi/kme-peer.json`.
 *
 * Key relay uses the shapes of ETSI GS QKD 020 V1.1.1 where they fit (`ext_keys` with `keys[{key_id, value}]`,
 * `initiator_sae_id`, `target_sae_ids`; acks `relayed | failed | voided`; `ext_keys/void`), batched so that
 * concurrent requests share one round trip. What 020 does not have carries this project's vendor prefix `qkms_`.
 * Material is identified by its position in the link's key stream, never by storage rows: a range is the first
 * position (a decimal string: positions are 64-bit) and a count.
 */

const Uuid = Type.String({ format: 'uuid' });
const Position = Type.String({ pattern: '^(0|[1-9][0-9]{0,18})$', description: 'position in the link key stream' });
const SaeId = Type.String({ pattern: '^[A-Za-z0-9._~-]{1,64}$' });
const KmeId = SaeId;

export const RangeSchema = Type.Object(
  { first: Position, count: Type.Integer({ minimum: 1, maximum: 1_048_576 }) },
  { additionalProperties: false },
);

export const ExtKeySchema = Type.Object(
  {
    key_id: Uuid,
    value: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9+/]*={0,2}$',
        description: 'relay: the key one-time-pad encrypted with the material of qkms_ranges (base64)',
      }),
    ),
    qkms_size: Type.Integer({ minimum: 8, multipleOf: 8, description: 'key size in bits' }),
    qkms_ranges: Type.Optional(
      Type.Array(RangeSchema, {
        minItems: 1,
        description: 'positions on qkms_link_id: the key itself, or, with value, the pad (required but for fallback keys)',
      }),
    ),
  },
  { additionalProperties: false },
);

/** Fallback keys (no QKD material): the keys of one message, sealed to the receiver's ML-KEM-768+X25519 key. */
export const PqcEnvelopeSchema = Type.Object(
  {
    kem_key_id: Type.String({ pattern: '^[0-9a-f]{32}$', description: "the receiver's KEM key sealed to (GET /peer/v1/kem-key)" }),
    kem_ciphertext: Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', maxLength: 4_096 }),
    iv: Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', maxLength: 24 }),
    sealed: Type.String({
      pattern: '^[A-Za-z0-9+/]*={0,2}$',
      description: "AES-256-GCM (key from the KEM's shared secret by HKDF-SHA256) of the keys concatenated, then the tag",
    }),
  },
  {
    additionalProperties: false,
    description: "fallback keys (the pair's QKD pool could not serve): their material, sealed to the receiver; slaves at the receiver only",
  },
);

/** A KME's public KEM key, for the peers that send it fallback keys. */
export const KemKeySchema = Type.Object(
  {
    kem: Type.Literal('ML-KEM-768+X25519'),
    kem_key_id: Type.String({ pattern: '^[0-9a-f]{32}$' }),
    public_key: Type.String({ description: 'base64' }),
  },
  { additionalProperties: false },
);

export const ExtKeysSchema = Type.Object(
  {
    initiator_sae_id: SaeId,
    target_sae_ids: Type.Array(SaeId, { minItems: 1, description: 'slaves to reach at or beyond the receiver' }),
    keys: Type.Array(ExtKeySchema, { minItems: 1 }),
    qkms_link_id: Type.String({ pattern: '^[A-Za-z0-9._~-]{1,128}$' }),
    qkms_origin_kme_id: KmeId,
    qkms_path: Type.Array(KmeId, { minItems: 1, maxItems: 16, description: 'KMEs passed so far, origin first' }),
    qkms_expires_at: Type.String({ format: 'date-time', description: 'the slaves must fetch the keys before' }),
    qkms_pqc: Type.Optional(PqcEnvelopeSchema),
  },
  { additionalProperties: false, description: 'ETSI GS QKD 020 ext_keys, with qkms_ extensions' },
);

export const ExtKeysBatchSchema = Type.Object(
  {
    requests: Type.Array(ExtKeysSchema, { minItems: 1, maxItems: 4_096 }),
    qkms_deadline_ms: Type.Integer({ minimum: 1, description: 'the sender gives up after this many ms' }),
  },
  { additionalProperties: false },
);

export const ExtKeysAckSchema = Type.Object(
  {
    acks: Type.Array(
      Type.Object(
        {
          key_ids: Type.Array(Uuid),
          status: Type.Union([Type.Literal('relayed'), Type.Literal('failed')]),
          message: Type.Optional(Type.String()),
        },
        { additionalProperties: false },
      ),
      { description: 'one per request, in order' },
    ),
  },
  { additionalProperties: false },
);

export const VoidSchema = Type.Object(
  {
    key_ids: Type.Array(Uuid, { maxItems: 65_536 }),
    qkms_reason: Type.String({ maxLength: 200 }),
    qkms_link_id: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._~-]{1,128}$' })),
    qkms_ranges: Type.Optional(
      Type.Array(RangeSchema, { maxItems: 65_536, description: "the sender's material on qkms_link_id it spent: destroy your copies" }),
    ),
  },
  { additionalProperties: false },
);
export const VoidAckSchema = Type.Object(
  { voided: Type.Integer({ minimum: 0, description: 'keys this call destroyed (here and downstream)' }) },
  { additionalProperties: false },
);

/** The primary tells the secondary which device keys fill which positions, and who owns them. */
export const MaterialSchema = Type.Object(
  {
    keys: Type.Array(
      Type.Object(
        {
          ref: Type.String({ minLength: 1, maxLength: 256 }),
          first_seq: Position,
          blocks: Type.Integer({ minimum: 1, maximum: 1_048_576 }),
          owner_split: Type.Integer({
            minimum: 0,
            description: 'positions [first_seq, first_seq + owner_split) are the primary\'s, the rest the secondary\'s',
          }),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 100_000 },
    ),
  },
  { additionalProperties: false },
);
export const MaterialAckSchema = Type.Object(
  {
    stored: Type.Array(Type.String(), { description: 'refs stored now or before' }),
    not_ready: Type.Array(Type.String(), { description: "refs this end's device does not have (yet)" }),
    room: Type.Integer({ description: 'blocks the secondary can still own before its pool is full' }),
  },
  { additionalProperties: false },
);

/** Sent both ways every sync interval: link parameters, ownership watermark, room and reach. */
export const SyncSchema = Type.Object(
  {
    kme_id: KmeId,
    block_bits: Type.Integer({ minimum: 8 }),
    primary_kme_id: KmeId,
    watermark: Type.Union([Position, Type.Null()], {
      description: 'below this position the sender owns no live material; null: it has never stored any',
    }),
    room: Type.Integer({ description: 'blocks the sender can still own before its pool is full' }),
    reach: Type.Array(
      Type.Object({ kme_id: KmeId, blocks: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
      { description: 'blocks the sender could deliver now towards each KME it reaches' },
    ),
  },
  { additionalProperties: false },
);

export const LinkPathSchema = Type.Object({ link_id: Type.String({ minLength: 1 }) });

export type Range = Static<typeof RangeSchema>;
export type ExtKey = Static<typeof ExtKeySchema>;
export type ExtKeys = Static<typeof ExtKeysSchema>;
export type ExtKeysBatch = Static<typeof ExtKeysBatchSchema>;
export type ExtKeysAck = Static<typeof ExtKeysAckSchema>;
export type Material = Static<typeof MaterialSchema>;
export type MaterialAck = Static<typeof MaterialAckSchema>;
export type Sync = Static<typeof SyncSchema>;
export type KemKey = Static<typeof KemKeySchema>;

/** A KME asks a peer to witness (cosign) its custody log's latest checkpoint (docs/custody.md, witnessing). */
export const CosignRequestSchema = Type.Object(
  {
    checkpoint: Type.String({ maxLength: 65_536, description: "the origin KME's signed checkpoint (C2SP signed note)" }),
    vkeys: Type.Array(Type.String({ maxLength: 8_192 }), { minItems: 1, maxItems: 16, description: "the origin's verifier keys (pinned by the witness on first contact)" }),
    from_size: Type.Integer({ minimum: 0, description: 'the tree size the consistency proof starts from (the size the witness holds)' }),
    proof: Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64, description: 'RFC 9162 consistency proof from from_size to the checkpoint, base64 hashes' }),
  },
  { additionalProperties: false },
);
export const CosignAnswerSchema = Type.Union([
  Type.Object(
    { cosigned: Type.Literal(true), witness: KmeId, signatures: Type.String({ description: "the witness's signature lines for the note" }) },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      cosigned: Type.Literal(false),
      witness: KmeId,
      held_size: Type.Integer({ minimum: 0, description: 'the size the witness holds: send a proof from there' }),
    },
    { additionalProperties: false },
  ),
]);
export type CosignRequest = Static<typeof CosignRequestSchema>;
export type CosignAnswer = Static<typeof CosignAnswerSchema>;
