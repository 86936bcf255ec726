import { Type, type Static } from 'typebox';
import { SkipSchema } from '../skip/config.js';

/**
 * The configuration file's schema: the single source for validation, defaults and the TypeScript type.
 * Field names are snake_case like the ETSI 014 status fields they mirror. Secrets (HSM PIN, database URL with a
 * password) come from the environment or files, never from this file: see `load.ts`.
 */

/** SAE and KME IDs: clients put them in URL paths without encoding, so keep them to unreserved characters. */
export const IdPattern = '^[A-Za-z0-9._~-]{1,64}$';

const Id = (description: string) => Type.String({ pattern: IdPattern, description });
const PositiveInt = (description: string, def: number) =>
  Type.Integer({ minimum: 1, maximum: 2_147_483_647, default: def, description });

export const KeyLimitsSchema = Type.Object(
  {
    key_size: PositiveInt('default key size in bits; also the block size material is stored in', 256),
    min_key_size: PositiveInt('smallest key size in bits a request may ask for', 64),
    max_key_size: PositiveInt('largest key size in bits a request may ask for', 1024),
    max_key_count: PositiveInt('pool cap, in blocks of key_size bits, per link', 100_000),
    max_key_per_request: PositiveInt('most keys one enc_keys or dec_keys request may carry', 128),
    max_SAE_ID_count: Type.Integer({ minimum: 0, maximum: 64, default: 8, description: 'most additional slaves' }),
    key_ttl_seconds: Type.Integer({
      minimum: 1,
      maximum: 30 * 86_400,
      default: 300,
      description: 'how long a delivered key waits for its slaves before its material is destroyed',
    }),
  },
  { additionalProperties: false, default: {} },
);

/** A SHA-256 certificate fingerprint: 64 hex digits, colons between the bytes allowed. */
export const FingerprintPattern = '^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$';
/** A tag's name: lower case, letters, digits and _. */
export const TagNamePattern = '^[a-z][a-z0-9_]{0,31}$';

/** Free-form labels of an SAE (asset, tenant, classification, geography, …), recorded with what it receives. */
export const TagsSchema = Type.Record(Type.String({ pattern: TagNamePattern }), Type.String({ maxLength: 128 }), {
  maxProperties: 16,
  description: 'labels such as asset, tenant, classification, geography (lower-case names, string values)',
});

export const SaeSchema = Type.Object(
  {
    id: Id('the SAE ID used in ETSI 014 paths'),
    certificate_cn: Type.Optional(Type.String({ minLength: 1, description: 'subject CN; defaults to the SAE ID' })),
    certificate_sha256: Type.Optional(
      Type.String({ pattern: FingerprintPattern, description: 'pin one certificate by its SHA-256 fingerprint, in addition to the CN' }),
    ),
    allowed_peers: Type.Optional(
      Type.Array(Id('an SAE ID'), { uniqueItems: true, maxItems: 1024, description: 'the SAEs it may share keys with; default: any' }),
    ),
    tags: Type.Optional(TagsSchema),
  },
  { additionalProperties: false },
);

/** An auditor or an operator: a person's (or a tool's) client certificate, in a role of its own. */
const PersonSchema = (role: string) =>
  Type.Object(
    {
      id: Id(`the ${role}, as named in logs and the custody log`),
      certificate_cn: Type.Optional(Type.String({ minLength: 1, description: `subject CN; defaults to the ${role}'s ID` })),
      certificate_sha256: Type.Optional(Type.String({ pattern: FingerprintPattern, description: 'pin one certificate by its SHA-256 fingerprint' })),
    },
    { additionalProperties: false },
  );
export const AuditorSchema = PersonSchema('auditor');
export const OperatorSchema = PersonSchema('operator');

export const Pkcs11HsmSchema = Type.Object(
  {
      type: Type.Literal('pkcs11'),
      module: Type.String({ minLength: 1, description: 'path of the PKCS#11 module (.so)' }),
      token_label: Type.String({ minLength: 1 }),
      key_label: Type.Optional(Type.String({ minLength: 1, description: "KEK label prefix; default 'kms-kek'" })),
      signing_key_label: Type.Optional(
        Type.String({ minLength: 1, description: "label of the ECDSA P-256 key pair that signs the custody log's checkpoints; default 'kms-custody'" }),
      ),
      pin_env: Type.Optional(Type.String({ minLength: 1, description: "env variable with the PIN; default KMS_HSM_PIN" })),
      pin_file: Type.Optional(Type.String({ minLength: 1, description: 'file holding the PIN (wins over pin_env)' })),
      create_key_if_missing: Type.Optional(Type.Boolean({ description: 'generate KEK v1 and the signing key pair when absent; default false' })),
      timeout_ms: Type.Optional(
        Type.Integer({
          minimum: 0,
          maximum: 600_000,
          description:
            'deadline of one PKCS#11 call (calls run in a worker thread); default 2000; 0: synchronous calls on the event loop, faster for callers that await each call but unbounded (see src/hsm/pkcs11.ts)',
        }),
      ),
    },
    { additionalProperties: false },
);
export const MockHsmSchema = Type.Object({ type: Type.Literal('mock') }, { additionalProperties: false });
export const HsmSchema = Type.Union([Pkcs11HsmSchema, MockHsmSchema]);

const DurationSeconds = (description: string) => Type.Number({ exclusiveMinimum: 0, description });

/**
 * A simulated device pair: material at a configured secure key rate, a QBER figure and scheduled outages. On a
 * loopback link it draws on OS randomness. On a link between two KMEs both ends derive the same stream from a
 * shared seed (`seed_file` or `seed_env`, 32 bytes as hex): whoever holds the seed holds every key, so this is for
 * demos and tests only, and the KME says so in its log.
 */
export const SimulatorSourceSchema = Type.Object(
  {
    type: Type.Literal('simulator'),
    rate_bits_per_second: Type.Number({ exclusiveMinimum: 0, default: 1_000_000, description: 'secure key rate' }),
    qber: Type.Number({ minimum: 0, maximum: 0.5, default: 0.02, description: 'above 0.11 the simulated link yields no key' }),
    seed_file: Type.Optional(Type.String({ minLength: 1, description: 'file holding the shared seed of a paired link (hex)' })),
    seed_env: Type.Optional(Type.String({ minLength: 1, description: 'environment variable holding the shared seed (hex)' })),
    outages: Type.Array(
      Type.Object(
        {
          after_seconds: Type.Number({ minimum: 0, description: 'seconds after start' }),
          duration_seconds: DurationSeconds('how long the link is down'),
        },
        { additionalProperties: false },
      ),
      { default: [], description: 'scheduled outages: the device yields nothing and answers as unreachable' },
    ),
  },
  { additionalProperties: false },
);

/**
 * A QKD device that itself serves ETSI GS QKD 014 (as ID Quantique and Toshiba devices do). The primary KME takes
 * keys with enc_keys, the secondary fetches the same keys by ID with dec_keys; the KME is the device's SAE.
 */
export const Etsi014SourceSchema = Type.Object(
  {
    type: Type.Literal('etsi014'),
    url: Type.String({ pattern: '^https://', description: 'base URL of the device API, e.g. https://qkd-a.example.net' }),
    ca: Type.String({ minLength: 1, description: 'CA bundle the device certificate must chain to (PEM)' }),
    cert: Type.String({ minLength: 1, description: 'client certificate this KME presents to the device (PEM)' }),
    key: Type.String({ minLength: 1, description: 'its private key (PEM)' }),
    peer_sae_id: Type.String({ minLength: 1, description: "the far end's SAE ID in the device pair's own terms" }),
    keys_per_request: Type.Integer({ minimum: 1, maximum: 10_000, default: 64, description: 'enc_keys number per call' }),
    timeout_ms: Type.Integer({ minimum: 100, maximum: 120_000, default: 5_000 }),
  },
  { additionalProperties: false },
);

/** Key files a device drops into a directory; matched by file name at both ends, erased once stored. */
export const FileSourceSchema = Type.Object(
  {
    type: Type.Literal('file'),
    directory: Type.String({ minLength: 1 }),
    poll_ms: Type.Integer({ minimum: 10, maximum: 60_000, default: 500 }),
  },
  { additionalProperties: false },
);

export const SourceSchema = Type.Union([SimulatorSourceSchema, Etsi014SourceSchema, FileSourceSchema]);
export const SOURCE_SCHEMAS = { simulator: SimulatorSourceSchema, etsi014: Etsi014SourceSchema, file: FileSourceSchema };

/** A QKD link this KME holds material of: to a peer KME, or a loopback link for pairs of SAEs of this KME. */
export const LinkSchema = Type.Object(
  {
    link_id: Type.String({ pattern: IdPattern, description: 'both ends name the link the same' }),
    peer_kme_id: Type.Optional(Id('the KME at the other end; absent for a loopback link')),
    primary_kme_id: Type.Optional(
      Id('the end that reads new material from its device first; default: the lower of the two KME IDs'),
    ),
    max_blocks_per_batch: Type.Integer({
      minimum: 1,
      maximum: 65_536,
      default: 16_384,
      description: 'most blocks one ingest statement stores: 16,384 blocks (4 Mbit) keep a 128 Mbit/s link to ~30 statements a second',
    }),
    source: SourceSchema,
  },
  { additionalProperties: false },
);

/** A KME this one talks to directly (it holds a link with it, or relays through it). */
export const PeerSchema = Type.Object(
  {
    kme_id: Id('the peer KME'),
    url: Type.String({ pattern: '^https://', description: 'where its KME-to-KME API listens' }),
    certificate_cn: Type.Optional(Type.String({ minLength: 1, description: 'subject CN of its certificate; default the KME ID' })),
    certificate_sha256: Type.Optional(
      Type.String({ pattern: FingerprintPattern, description: 'pin its certificate' }),
    ),
  },
  { additionalProperties: false },
);

export const NetworkSchema = Type.Object(
  {
    /** SAEs attached to other KMEs, reachable through the links and routes below. */
    remote_saes: Type.Array(
      Type.Object({ sae_id: Id('an SAE of another KME'), kme_id: Id('its KME') }, { additionalProperties: false }),
      { default: [] },
    ),
    /** Next hops towards KMEs this one has no link with (trusted-node relay). A peer is reached directly. */
    routes: Type.Array(
      Type.Object({ kme_id: Id('a KME with no direct link'), via: Id('the peer to relay through') }, { additionalProperties: false }),
      { default: [] },
    ),
    peer_timeout_ms: Type.Integer({
      minimum: 100,
      maximum: 60_000,
      default: 3_000,
      description: 'how long a KME-to-KME call may take before the SAE gets a 503',
    }),
    sync_interval_ms: Type.Integer({ minimum: 50, maximum: 60_000, default: 1_000 }),
  },
  { additionalProperties: false, default: {} },
);

export const RequestLimitsSchema = Type.Object(
  {
    deadline_ms: Type.Integer({
      minimum: 100,
      maximum: 60_000,
      default: 5_000,
      description: 'a key request not served by then gets a 503 and takes nothing',
    }),
    max_queued: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 2_048, description: 'Get key requests waiting per link' }),
    max_event_loop_delay_ms: Type.Integer({
      minimum: 0,
      default: 1_000,
      description: 'past this mean event-loop delay (sampled every second) every request gets a 503 at once, until it recovers; 0: never',
    }),
    per_sae: Type.Optional(
      Type.Object(
        {
          max: Type.Integer({ minimum: 1, description: 'requests one SAE may make per window, at this KME (all its replicas, with Redis)' }),
          window_ms: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 1_000 }),
        },
        { additionalProperties: false, description: 'a request-rate limit per SAE certificate: past it, 503 with Retry-After (none when absent)' },
      ),
    ),
  },
  { additionalProperties: false, default: {} },
);

export const AuditSchema = Type.Object(
  {
    seal_every_ms: Type.Integer({
      minimum: 50,
      maximum: 60_000,
      default: 500,
      description: 'how often the sealer folds new custody events into the tree and signs a checkpoint',
    }),
    origin: Type.Optional(
      Type.String({ pattern: '^[^\\s+]+$', description: "the log's name in its checkpoints and signatures; default qkms/<kme_id>/custody" }),
    ),
    cosign_every_ms: Type.Integer({
      minimum: 100,
      maximum: 3_600_000,
      default: 10_000,
      description: 'how often each peer KME is asked to witness (cosign) the latest checkpoint',
    }),
  },
  { additionalProperties: false, default: {} },
);

/** What a pair's keys do when its QKD link cannot serve them (a policy's link_failure). */
export const LinkFailureSchema = Type.Enum(['fail_closed', 'pqc_fallback'], {
  description:
    "when the pair's QKD link or pool cannot serve a request: fail_closed (the default) answers 503; pqc_fallback lets the master's KME make the key and send it to the slave's KME encapsulated with ML-KEM-768+X25519 (the slave's KME must allow it too)",
});

/** A policy per SAE pair (docs/operators.md, "Policies"); the pair is unordered. */
export const PolicySchema = Type.Object(
  {
    saes: Type.Array(Id('an SAE ID'), { minItems: 2, maxItems: 2, description: 'the pair, either way round' }),
    key_ttl_seconds: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 30 * 86_400, description: "how long the pair's keys wait for their slaves; default keys.key_ttl_seconds" }),
    ),
    min_pool_keys: Type.Optional(Type.Integer({ minimum: 0, description: 'below this many keys in the pool the pair draws from: a log line and a status warning' })),
    max_keys_per_minute: Type.Optional(Type.Integer({ minimum: 1, description: 'keys the pair may take a minute at this KME; more get a 503' })),
    link_failure: Type.Optional(LinkFailureSchema),
    tags: Type.Optional(TagsSchema),
  },
  { additionalProperties: false },
);

export const AdminSchema = Type.Object(
  {
    min_pool_deletion_wait_seconds: Type.Integer({
      minimum: 1,
      maximum: 30 * 86_400,
      default: 3_600,
      description: 'the shortest waiting period an operator may give a pool deletion (kms pool schedule-deletion --in)',
    }),
  },
  { additionalProperties: false, default: {} },
);

export const ConfigSchema = Type.Object(
  {
    kme_id: Id('this KME'),
    listen: Type.Object(
      {
        host: Type.String({ default: '0.0.0.0' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 8443 }),
        // Time limits for a key service (README "Connections"): a connection that holds a socket without using it is
        // closed, so that idle or slow clients cannot exhaust the server.
        handshake_timeout_ms: Type.Integer({ minimum: 100, default: 10_000, description: 'a TLS handshake not done by then: connection closed' }),
        headers_timeout_ms: Type.Integer({
          minimum: 100,
          default: 10_000,
          description: 'request headers not complete by then, counted from the connection (or the last answer): 408 and closed',
        }),
        request_timeout_ms: Type.Integer({ minimum: 1_000, default: 30_000, description: 'a whole request (headers and body) not received by then: 408' }),
        keep_alive_timeout_ms: Type.Integer({ minimum: 100, default: 30_000, description: 'an idle kept-alive connection is closed after this long' }),
      },
      { additionalProperties: false, default: {} },
    ),
    coordination: Type.Optional(
      Type.Object(
        {
          redis: Type.Optional(
            Type.Object(
              {
                url_env: Type.String({ minLength: 1, default: 'KMS_REDIS_URL', description: 'environment variable holding the Redis URL (or its file, with _FILE); not used with sentinels' }),
                sentinels: Type.Optional(
                  Type.Array(Type.Object({ host: Type.String({ minLength: 1 }), port: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false }), {
                    minItems: 1,
                    description: 'Redis Sentinel: the sentinels to ask for the master (instead of a URL)',
                  }),
                ),
                master_name: Type.Optional(Type.String({ minLength: 1, description: 'with sentinels: the name of the monitored master' })),
                password_env: Type.Optional(Type.String({ minLength: 1, description: "with sentinels: environment variable holding the master's password (or its file, with _FILE)" })),
                key_prefix: Type.Optional(Type.String({ minLength: 1, description: "names of this KME's keys and channel in Redis; default qkms:<kme_id>" })),
              },
              { additionalProperties: false },
            ),
          ),
        },
        {
          additionalProperties: false,
          description: 'what replicas of this KME share besides the database: with redis, cache invalidation, counters and rate limits across replicas; without, this process alone',
        },
      ),
    ),
    ops: Type.Optional(
      Type.Object(
        {
          listen: Type.Object(
            {
              host: Type.String({ default: '127.0.0.1', description: 'an address only the probes reach' }),
              port: Type.Integer({ minimum: 0, maximum: 65535 }),
            },
            { additionalProperties: false },
          ),
        },
        { additionalProperties: false, description: 'the operations listener: plain HTTP GET /livez and /readyz for probes (none when absent)' },
      ),
    ),
    tls: Type.Object(
      {
        cert: Type.String({ minLength: 1, description: 'server certificate chain (PEM)' }),
        key: Type.String({ minLength: 1, description: 'server private key (PEM)' }),
        ca: Type.String({ minLength: 1, description: 'CA bundle that SAE client certificates must chain to (PEM)' }),
        crl: Type.Optional(Type.String({ minLength: 1, description: 'certificate revocation lists of those CAs (PEM); reloaded with the rest (SIGHUP, kms tls reload)' })),
      },
      { additionalProperties: false },
    ),
    database: Type.Object(
      {
        url_env: Type.String({ minLength: 1, default: 'KMS_DATABASE_URL' }),
        app_role: Type.Optional(
          Type.String({
            pattern: '^[a-z_][a-z0-9_]{0,62}$',
            description:
              "the role the KME connects as (in the URL of url_env); when set, `kms migrate` connects as the tables' owner (migrate_url_env), creates this role and grants it only SELECT and INSERT on the custody log, and `kms serve` checks the schema instead of migrating",
          }),
        ),
        migrate_url_env: Type.String({ minLength: 1, default: 'KMS_MIGRATE_DATABASE_URL', description: 'the owner\'s database URL, for kms migrate with app_role' }),
        pool_size: Type.Integer({ minimum: 1, maximum: 200, default: 16 }),
      },
      { additionalProperties: false, default: {} },
    ),
    hsm: HsmSchema,
    saes: Type.Array(SaeSchema, { minItems: 1 }),
    auditors: Type.Array(AuditorSchema, { default: [], description: 'who may read the custody log through the auditor API (/audit/v1)' }),
    operators: Type.Array(OperatorSchema, { default: [], description: 'who may administer the KME through the admin API (/admin/v1) and `kms sae|key|pool|…`' }),
    keys: KeyLimitsSchema,
    requests: RequestLimitsSchema,
    links: Type.Optional(
      Type.Array(LinkSchema, {
        minItems: 1,
        description: 'default: one loopback link <kme_id>-loopback fed by a simulator (demos and tests)',
      }),
    ),
    peers: Type.Array(PeerSchema, { default: [] }),
    network: NetworkSchema,
    audit: AuditSchema,
    admin: AdminSchema,
    policies: Type.Array(PolicySchema, { default: [], description: 'policies per SAE pair; operators add more with kms policy' }),
    skip: Type.Optional(SkipSchema),
  },
  { additionalProperties: false },
);

/** The validated config: `links` always present (parseConfig fills in the default). */
export type Config = Omit<Static<typeof ConfigSchema>, 'links'> & { links: LinkConfig[] };
export type KeyLimits = Static<typeof KeyLimitsSchema>;
export type HsmConfig = Static<typeof HsmSchema>;
export type SourceConfig = Static<typeof SourceSchema>;
export type LinkConfig = Static<typeof LinkSchema>;
export type PeerConfig = Static<typeof PeerSchema>;
export type SimulatorSourceConfig = Static<typeof SimulatorSourceSchema>;
export type Etsi014SourceConfig = Static<typeof Etsi014SourceSchema>;
export type FileSourceConfig = Static<typeof FileSourceSchema>;
