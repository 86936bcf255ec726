import { Barrier } from '../../src/barrier/barrier.js';
import type { KeyWrapper } from '../../src/hsm/key-wrapper.js';
import { eraseQueued } from '../../src/lifecycle/eraser.js';

/**
 * What tests read from the pool's tables (migrations/0003_chunks.sql), in the words of the key lifecycle: positions
 * available, positions a key still holds, positions bound twice. One place, so a test states the invariant it checks
 * and not how the schema spells it.
 */

type Queryable = { query: (sql: string, params?: unknown[]) => Promise<{ rows: Array<Record<string, unknown>> }> };

const AVAILABLE_OWNED = `SELECT COALESCE(sum(blocks - next_free), 0)::int FROM key_chunk
                           WHERE owned AND confirmed AND NOT set_aside AND ($1::text IS NULL OR link_id = $1)`;

/** Owned positions this KME can hand out (its stored_key_count in blocks). */
export async function availableOwned(db: Queryable, linkId?: string): Promise<number> {
  const { rows } = await db.query(`SELECT (${AVAILABLE_OWNED}) AS n`, [linkId ?? null]);
  return rows[0]!.n as number;
}

/**
 * The pool's counters (pool_count, which every ingest and claim keeps) beside the owned positions they count, read
 * in one statement and so in one snapshot: a KME's ingester keeps committing chunks while a test reads, and two
 * statements can see different pools (a CI run read 1980 against 1948, one chunk apart).
 */
export async function countedAndAvailable(db: Queryable): Promise<{ counted: number; available: number }> {
  const { rows } = await db.query(
    `SELECT (SELECT COALESCE(sum(available), 0)::int FROM pool_count) AS counted, (${AVAILABLE_OWNED}) AS available`,
    [null],
  );
  return rows[0] as { counted: number; available: number };
}

/** Every position stored at this KME, whoever owns it and whatever became of it (chunks not yet deleted). */
export async function storedPositions(db: Queryable, linkId?: string): Promise<number> {
  const { rows } = await db.query(
    'SELECT COALESCE(sum(blocks), 0)::int AS n FROM key_chunk WHERE ($1::text IS NULL OR link_id = $1)',
    [linkId ?? null],
  );
  return rows[0]!.n as number;
}

/**
 * Positions of these keys whose material is still in a stored envelope: in a chunk and not gone (destroyed
 * positions are gone once the eraser has passed; see `eraseNow`), plus 1 for each relayed key's own envelope.
 */
export async function heldMaterial(db: Queryable, keyIds: string[]): Promise<number> {
  const { rows } = await db.query(
    `SELECT (SELECT COALESCE(sum(upper(r) - lower(r)), 0)
               FROM qkd_key q JOIN key_chunk c ON c.link_id = q.link_id AND int8range(c.first_seq, c.first_seq + c.blocks) && q.seqs,
                    unnest((q.seqs * int8multirange(int8range(c.first_seq, c.first_seq + c.blocks))) - c.gone) AS r
              WHERE q.key_id = ANY($1::uuid[]))::int
          + (SELECT count(*) FROM qkd_key WHERE key_id = ANY($1::uuid[]) AND wrapped IS NOT NULL)::int AS n`,
    [keyIds],
  );
  return rows[0]!.n as number;
}

/** Runs the eraser now (instead of waiting for its next pass), until the queue is empty: the KME's own pass may hold entries. */
export async function eraseNow(db: Parameters<typeof eraseQueued>[0]['db'], wrapper: KeyWrapper): Promise<void> {
  for (let i = 0; i < 100; i++) {
    await eraseQueued({ db, barrier: new Barrier(wrapper) });
    const { rows } = await db.query('SELECT count(*)::int AS n FROM erase_queue');
    if ((rows[0] as { n: number }).n === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the erase queue did not empty');
}

/**
 * Broken invariants of the pool, each a count that must be 0: positions bound to two keys, owned positions still
 * free yet bound to a key, keys whose positions do not match their block count, owned positions taken (the cursor
 * passed them) that neither belong to a key nor are destroyed (material lost silently).
 */
export async function poolViolations(db: Queryable): Promise<{ multiBound: number; freeButBound: number; wrongCount: number; takenUnbound: number }> {
  const { rows } = await db.query(`
    SELECT (SELECT count(*) FROM (
              SELECT r, lag(r) OVER (PARTITION BY q.link_id ORDER BY lower(r)) AS before
                FROM qkd_key q, unnest(q.seqs) AS r) AS x
             WHERE x.r && x.before)::int AS "multiBound",
           (SELECT count(*) FROM key_chunk c JOIN qkd_key q ON q.link_id = c.link_id
               AND q.seqs && int8range(c.first_seq + c.next_free, c.first_seq + c.blocks)
             WHERE c.owned)::int AS "freeButBound",
           (SELECT count(*) FROM qkd_key q
             WHERE q.seqs IS NOT NULL
               AND (SELECT sum(upper(r) - lower(r)) FROM unnest(q.seqs) AS r) <> q.block_count)::int AS "wrongCount",
           (SELECT COALESCE(sum(upper(r) - lower(r)), 0) FROM key_chunk c,
                   unnest(int8multirange(int8range(c.first_seq, c.first_seq + c.next_free)) - c.gone
                          - COALESCE((SELECT range_agg(q.seqs) FROM qkd_key q
                                       WHERE q.link_id = c.link_id AND q.seqs && int8range(c.first_seq, c.first_seq + c.blocks)), '{}')) AS r
             WHERE c.owned AND NOT c.set_aside)::int AS "takenUnbound"`);
  return rows[0] as { multiBound: number; freeButBound: number; wrongCount: number; takenUnbound: number };
}
