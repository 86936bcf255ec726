import { insertAuditSql } from '../audit/event.js';
import type { CursorMove } from './chunks.js';
import { named, type Queryable } from './db.js';
import { refusing, REFUSED } from './errors.js';
import { nextShard } from './pool.js';
import { positionsByLink, toMultirange } from './positions.js';

/**
 * Binding material to new key_IDs: the one statement that records a batch's keys (RESERVED or DELIVERED, DESIGN §5)
 * with everything that changes with them. It checks its own result and refuses it (src/store/errors.ts `refusing`)
 * when the rows it expects are not there: nothing of it stays, and a transaction around it rolls back. Where the
 * caller has nothing else to do atomically with it (the peer's binding with no pads to claim), it runs on its own.
 * The rest of a key's life is in keys.ts.
 */

export interface KeyRow {
  keyId: string;
  /** The link the key's blocks are on (or, for a relayed key, the link it arrived over). */
  linkId: string;
  masterSaeId: string;
  originKmeId: string;
  sizeBits: number;
  state: 'RESERVED' | 'DELIVERED';
  /** This KME's slaves for the key (each may fetch it once). */
  localSlaves: string[];
  expiresAt: Date;
  /** A relayed key's own material (barrier envelope); undefined when its material is blocks of `linkId`. */
  wrapped?: { wrapped: Buffer; kekVersion: number };
  /** Positions of the key's blocks on `linkId`, in concatenation order (empty for a relayed or fallback key). */
  blockSeqs: string[];
  /** A fallback key (no QKD material: made by the master's KME, `wrapped` holds it); none: QKD material. */
  origin?: 'pqc_fallback';
}

export interface BindSpec {
  keys: KeyRow[];
  /**
   * Whose material this is: `owned` — positions this KME claimed from its own chunks (the master's side; the
   * claim's cursors move by `cursors`, in the claim's transaction); `peer` — positions the peer owns and reserved
   * here (their chunks locked, checked and recorded as bound in them by this statement).
   */
  from: 'owned' | 'peer';
  /** One-time pads spent on relays: destroyed at once (they are part of no key). */
  pads: Array<{ linkId: string; seq: string; from: 'owned' | 'peer' }>;
  /**
   * Where the cursors of the owned chunks claimed in this transaction go, from where (src/store/chunks.ts
   * `cursorsAfter`). The positions they pass over must be exactly the owned positions bound here: keys `from` owned
   * material and owned pads. The database checks it in the same statement.
   */
  cursors: CursorMove[];
  auditBodies: string[];
}

/**
 * The peer's side of a binding: in each chunk of the peer's material it touches, the positions bound to keys here are
 * added to `bound` and the one-time pads spent here to `gone` — refused (the chunk is not updated, and the counts
 * returned fall short) if any of them is bound or gone already, or if a pad is also a key's. Each chunk is found
 * through the primary key from the ranges' starts, as in `chunksHolding` (src/store/chunks.ts): the last chunk
 * starting at or before a range, and any starting inside it. Not a search back over MAX_CHUNK_BLOCKS positions: in
 * the prepared statement's generic plan PostgreSQL turned that into a scan of every chunk of the link, then joined
 * the ranges (measured at the relay node of the bench's network: 5.5–7.0 ms a statement, most of the peer's database
 * time; now about 2.2 ms).
 *
 * The statement locks the chunks itself, in ascending order (the lock order of src/store/chunks.ts): `peer_chunks`
 * locks each one in a LATERAL sub-select with FOR UPDATE, which PostgreSQL never folds into a join, so each is a
 * primary-key lookup in the order of the sorted lookup; the update reads `peer_chunks` whole (its key lists) before it
 * touches a row. Both shapes hold whatever the generic plan estimates: a plain join to key_chunk became a merge join
 * over a sequential scan of every chunk (4.2 of 5.0 ms at the bench's relay node). Under READ COMMITTED the update
 * re-reads a chunk that a concurrent binding changed and re-checks it, so two bindings of one position never both
 * pass.
 */
const PEER_SQL = `peer_in AS (
             SELECT link, range_agg(pads) AS pads, range_agg(keys) AS keys
               FROM (SELECT t.link, t.seqs AS pads, '{}'::int8multirange AS keys
                       FROM unnest($18::text[], $19::int8multirange[]) AS t(link, seqs)
                     UNION ALL
                     SELECT keys.link_id, '{}'::int8multirange, keys.seqs FROM keys WHERE NOT $13 AND keys.seqs IS NOT NULL) AS x
              GROUP BY link),
           peer_chunks AS MATERIALIZED (
             SELECT p.link, p.first_seq, p.pads, p.keys
               FROM (SELECT DISTINCT ON (i.link, c.first_seq) i.link, c.first_seq, i.pads * c.span AS pads, i.keys * c.span AS keys
                       FROM peer_in AS i, unnest(i.pads + i.keys) AS u,
                            LATERAL (
                              SELECT h.first_seq, int8multirange(int8range(h.first_seq, h.first_seq + h.blocks)) AS span
                                FROM ((SELECT first_seq, blocks FROM key_chunk c
                                        WHERE c.link_id = i.link AND c.first_seq <= lower(u) ORDER BY c.first_seq DESC LIMIT 1)
                                      UNION ALL
                                      (SELECT first_seq, blocks FROM key_chunk c
                                        WHERE c.link_id = i.link AND c.first_seq > lower(u) AND c.first_seq < upper(u))) AS h
                               WHERE h.first_seq + h.blocks > lower(u)) AS c
                      ORDER BY i.link, c.first_seq) AS p,
                    LATERAL (SELECT FROM key_chunk k WHERE k.link_id = p.link AND k.first_seq = p.first_seq FOR UPDATE) AS locked),
           peer_used AS (
             UPDATE key_chunk k SET gone = k.gone + p.pads, bound = k.bound + p.keys
               FROM peer_chunks AS p
              WHERE k.link_id = p.link AND k.first_seq = p.first_seq
                AND k.link_id = ANY (ARRAY(SELECT link FROM peer_chunks)) AND k.first_seq = ANY (ARRAY(SELECT first_seq FROM peer_chunks))
                AND NOT k.owned AND NOT k.set_aside
                AND isempty(p.pads * p.keys) AND NOT (k.gone && (p.pads + p.keys)) AND NOT (k.bound && (p.pads + p.keys))
             RETURNING (SELECT COALESCE(sum(upper(r) - lower(r)), 0) FROM unnest(p.pads) r) AS padded,
                       (SELECT COALESCE(sum(upper(r) - lower(r)), 0) FROM unnest(p.keys) r) AS bound)`;

/** The same counts when nothing of the peer's is bound or spent (the owner's statement leaves the update out). */
const NO_PEER_SQL = `peer_used AS (SELECT 0 AS padded, 0 AS bound FROM unnest($18::text[], $19::int8multirange[]) WHERE false)`;

/** What the keys of one request share (all but their ID, positions and own envelope). */
interface KeyGroup {
  linkId: string; masterSaeId: string; originKmeId: string; sizeBits: number; blocks: number; state: KeyRow['state'];
  /** SAE IDs never hold a comma (IdPattern): the key's slaves as one list, in a fixed order. */
  slaves: string; expiresAt: string; origin: string | null;
}

/**
 * The keys' shared columns once per group of keys that share them all (in practice one group per request), and each
 * key's group (1-based, as WITH ORDINALITY counts). A 128-key request sends nine arrays of one element and five of
 * 128 instead of fourteen of 128: the pg driver escapes every element of a text array, and PostgreSQL parses every
 * one, a timestamp per key included.
 */
function keyGroups(keys: KeyRow[]): { groups: KeyGroup[]; groupOf: number[] } {
  const groups: KeyGroup[] = [];
  const index = new Map<string, number>();
  let last: KeyRow | undefined;
  let lastGroup = 0;
  const groupOf = keys.map((k) => {
    // A request's keys come one after another: most keys are the one before's group, found by comparing fields.
    if (last && sameGroup(last, k)) return lastGroup;
    const g: KeyGroup = {
      linkId: k.linkId, masterSaeId: k.masterSaeId, originKmeId: k.originKmeId, sizeBits: k.sizeBits, blocks: k.blockSeqs.length,
      state: k.state, slaves: [...k.localSlaves].sort().join(','), expiresAt: k.expiresAt.toISOString(), origin: k.origin ?? null,
    };
    const id = JSON.stringify(Object.values(g));
    let n = index.get(id);
    if (n === undefined) index.set(id, (n = groups.push(g)));
    [last, lastGroup] = [k, n];
    return n;
  });
  return { groups, groupOf };
}

function sameGroup(a: KeyRow, b: KeyRow): boolean {
  return a.linkId === b.linkId && a.masterSaeId === b.masterSaeId && a.originKmeId === b.originKmeId && a.sizeBits === b.sizeBits
    && a.blockSeqs.length === b.blockSeqs.length && a.state === b.state && a.expiresAt.getTime() === b.expiresAt.getTime()
    && (a.origin ?? null) === (b.origin ?? null)
    && a.localSlaves.length === b.localSlaves.length && a.localSlaves.every((s, i) => s === b.localSlaves[i]);
}

/**
 * Binds positions to new key_IDs, records each key with its local slaves, moves the owner's cursors, destroys spent
 * pads (the peer's: marked gone in their chunks; all: queued for erasure), adjusts the counts of owned material and
 * writes the audit events: one statement for any number of keys. The database refuses a position bound twice
 * (MaterialGoneError), whatever the caller does (migrations/0004_guards_on_the_chunk.sql): on owned material
 * because a cursor passes each position once and the statement checks that it binds exactly what its cursors passed;
 * on the peer's material because each chunk records the positions bound or spent here.
 */
export async function bindKeys(c: Queryable, spec: BindSpec): Promise<void> {
  // Owned positions leave the count when taken; the peer's were never counted here.
  const taken = new Map<string, number>();
  const owned = [
    ...(spec.from === 'owned' ? spec.keys.flatMap((k) => k.blockSeqs.map(() => k.linkId)) : []),
    ...spec.pads.filter((p) => p.from === 'owned').map((p) => p.linkId),
  ];
  for (const link of owned) taken.set(link, (taken.get(link) ?? 0) + 1);
  const padsBy = (from?: 'owned' | 'peer') =>
    positionsByLink(spec.pads.filter((p) => !from || p.from === from).map((p) => ({ linkId: p.linkId, seqs: [p.seq] })));
  const peerPads = padsBy('peer');
  const ownedPads = padsBy('owned');
  const spentPads = padsBy();
  // The owner's statement (the single-KME path) leaves the peer's update out: the planner answered it with a scan of
  // every chunk even when it had nothing to do. A second prepared statement, not a plan per call.
  const touchesPeer = spec.from === 'peer' || peerPads.size > 0;
  const { groups, groupOf } = keyGroups(spec.keys);
  await refusing(c.query(
    named(
      touchesPeer ? 'bind-keys-peer' : 'bind-keys',
      `WITH keys AS (
           INSERT INTO qkd_key (key_id, link_id, master_sae_id, origin_kme_id, size_bits, block_count, state,
                                slaves_pending, expires_at, wrapped, kek_version, seqs, slaves, origin)
           SELECT k.key_id, g.link_id, g.master, g.origin, g.size, g.blocks, g.state, cardinality(g.slaves), g.expires,
                  k.wrapped, k.kek, k.seqs, g.slaves, COALESCE(g.material, 'qkd')
             FROM unnest($1::uuid[], $10::bytea[], $11::int[], $12::int8multirange[], $31::int[]) AS k(key_id, wrapped, kek, seqs, n)
             JOIN (SELECT t.*, string_to_array(t.slave_list, ',') AS slaves
                     FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::smallint[], $7::text[], $8::text[],
                                 $9::timestamptz[], $28::text[]) WITH ORDINALITY
                       AS t(link_id, master, origin, size, blocks, state, slave_list, expires, material, n)) AS g USING (n)
           RETURNING link_id, seqs),
         cursors AS (
           UPDATE key_chunk k SET next_free = t.next_free
             FROM unnest($14::text[], $15::bigint[], $16::int[], $17::int[]) AS t(link, first, was, next_free)
            WHERE k.link_id = t.link AND k.first_seq = t.first AND k.owned AND k.next_free = t.was AND t.next_free > t.was
           RETURNING k.link_id AS link, int8range(k.first_seq + t.was, k.first_seq + t.next_free) AS r),
         owned_bound AS (
           SELECT keys.link_id AS link, r FROM keys, unnest(keys.seqs) AS r WHERE $13
           UNION ALL
           SELECT t.link, r FROM unnest($26::text[], $27::int8multirange[]) AS t(link, seqs), unnest(t.seqs) AS r),
         -- Per link: the owned positions bound here are exactly those the cursors passed, none twice.
         owned_mismatch AS (
           SELECT count(*) AS n
             FROM (SELECT link, range_agg(r) AS u, sum(upper(r) - lower(r)) AS n FROM owned_bound GROUP BY link) b
             FULL JOIN (SELECT link, range_agg(r) AS u, sum(upper(r) - lower(r)) AS n FROM cursors GROUP BY link) a USING (link)
            WHERE a.u IS DISTINCT FROM b.u OR a.n IS DISTINCT FROM b.n),
         ${touchesPeer ? PEER_SQL : NO_PEER_SQL},
         erase AS (INSERT INTO erase_queue (link_id, seqs) SELECT * FROM unnest($20::text[], $21::int8multirange[])),
         counted AS (
           UPDATE pool_count p SET available = available - t.n
             FROM unnest($22::text[], $23::bigint[]) AS t(link, n)
            WHERE p.link_id = t.link AND p.shard = $24),
         audited AS (${insertAuditSql(25)}),
         found AS (
           SELECT (SELECT count(*) FROM keys)::int AS keys, (SELECT count(*) FROM cursors)::int AS cursors,
                  (SELECT COALESCE(sum(padded), 0) FROM peer_used)::int AS padded,
                  (SELECT COALESCE(sum(bound), 0) FROM peer_used)::int AS bound, (SELECT n FROM owned_mismatch)::int AS mismatched)
         SELECT CASE
                  WHEN keys <> cardinality($1::uuid[]) OR cursors <> cardinality($14::text[]) OR padded <> $29::int OR bound <> $30::int
                    THEN qkms_refuse('${REFUSED.materialGone}', format(
                      'material not available as expected: %s of %s keys, %s of %s cursors, %s of %s pads, %s of %s of the peer''s positions',
                      keys, cardinality($1::uuid[]), cursors, cardinality($14::text[]), padded, $29::int, bound, $30::int))
                  -- A defect of the caller, never a race (the claim holds the owned chunks locked).
                  WHEN mismatched > 0
                    THEN qkms_refuse('${REFUSED.defect}',
                      'refused by the database: the owned positions bound are not exactly those the cursors passed over; nothing was bound')
                END AS refused
           FROM found`,
      [
        spec.keys.map((k) => k.keyId),
        groups.map((g) => g.linkId),
        groups.map((g) => g.masterSaeId),
        groups.map((g) => g.originKmeId),
        groups.map((g) => g.sizeBits),
        groups.map((g) => g.blocks),
        groups.map((g) => g.state),
        groups.map((g) => g.slaves),
        groups.map((g) => g.expiresAt),
        spec.keys.map((k) => k.wrapped?.wrapped ?? null),
        spec.keys.map((k) => k.wrapped?.kekVersion ?? null),
        spec.keys.map((k) => (k.blockSeqs.length > 0 ? toMultirange(k.blockSeqs) : null)),
        spec.from === 'owned',
        spec.cursors.map((x) => x.linkId),
        spec.cursors.map((x) => x.firstSeq),
        spec.cursors.map((x) => x.from),
        spec.cursors.map((x) => x.nextFree),
        [...peerPads.keys()],
        [...peerPads.values()].map(toMultirange),
        [...spentPads.keys()],
        [...spentPads.values()].map(toMultirange),
        [...taken.keys()],
        [...taken.values()],
        nextShard(),
        spec.auditBodies,
        [...ownedPads.keys()],
        [...ownedPads.values()].map(toMultirange),
        groups.map((g) => g.origin),
        // What the peer's chunks must record: every pad spent here, and every position bound to a key here.
        [...peerPads.values()].reduce((n, x) => n + x.length, 0),
        spec.from === 'peer' ? spec.keys.reduce((n, k) => n + k.blockSeqs.length, 0) : 0,
        groupOf,
      ],
    ),
  ));
}
